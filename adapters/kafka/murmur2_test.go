package kafka

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"

	"github.com/reliable-go/reliable/internal/testenv"
)

// kafkaMurmur2Vectors are the Java client's own test vectors for
// Utils.murmur2 (UtilsTest.testMurmur2 in apache/kafka's clients module).
var kafkaMurmur2Vectors = []struct {
	key  string
	hash int32
}{
	{"21", -973932308},
	{"foobar", -790332482},
	{"a-little-bit-long-string", -985981536},
	{"a-little-bit-longer-string", -1486304829},
	{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
	{"abc", 479470107},
}

var partitionCounts = []int32{1, 2, 3, 5, 6, 7, 12, 16, 31, 100}

// partitionOf runs the publisher's configured partitioner on a record built
// the way Publish builds it.
func partitionOf(t testing.TB, key string, n int32) int32 {
	t.Helper()
	cfg := Config{Brokers: []string{"x:1"}}.withDefaults()
	rec := toRecord(&reliable.Message{ID: "id", Topic: "t", Key: key}, "t", "")
	p, err := cfg.Producer.Partitioner("t").Partition(rec, n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// L08: one order's events share a partition, the same one whichever language
// produced them. The default partitioner puts a key where the Java client does:
// toPositive(murmur2(key)) % partitions, with the expected hashes taken from
// Kafka's own tests, not from sarama.
func TestMurmur2MatchesKafkaVectors(t *testing.T) {
	for _, v := range kafkaMurmur2Vectors {
		for _, n := range partitionCounts {
			want := int32(uint32(v.hash)&0x7fffffff) % n
			if got := partitionOf(t, v.key, n); got != want {
				t.Errorf("key %q, %d partitions: partition %d, Java's is %d", v.key, n, got, want)
			}
		}
	}
}

// The same, against the Java client itself: a small Java program calls
// BuiltInPartitioner.partitionForKey from the kafka-clients jar of the test
// cluster for a table of keys, and one more check produces them to a real
// 6-partition topic and reads back where they landed.
func TestMurmur2MatchesJavaClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a JVM; skipped in -short mode")
	}
	java, err := exec.LookPath("java")
	if err != nil {
		testenv.Unavailable(t, "no java on PATH")
	}
	jars, _ := filepath.Glob(filepath.Join(serviceEnv("RELIABLE_KAFKA_HOME"), "libs-*", "kafka-clients-*.jar"))
	if len(jars) == 0 {
		testenv.Unavailable(t, "kafka-clients jar not found under RELIABLE_KAFKA_HOME")
	}
	keys := []string{"", "0", "1", "order-1", "order-42", "order-4711", "merchant-7", "café-ünïcödé-日本語",
		strings.Repeat("long-key-", 40), "a", "ab", "abc", "abcd", "abcde"}
	for i := 0; i < 40; i++ {
		keys = append(keys, "order-"+strconv.Itoa(i*7919))
	}
	src := filepath.Join(t.TempDir(), "Partition.java")
	if err := os.WriteFile(src, []byte(javaPartitionSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for _, k := range keys {
		for _, n := range partitionCounts {
			fmt.Fprintf(&in, "%d\t%s\n", n, k)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The whole libs folder: kafka-clients needs slf4j-api.
	cmd := exec.CommandContext(ctx, java, "-cp", filepath.Join(filepath.Dir(jars[0]), "*"), src)
	cmd.Stdin = strings.NewReader(in.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("java: %v\n%s", err, stderr.String())
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	checked := 0
	for _, k := range keys {
		for _, n := range partitionCounts {
			if !sc.Scan() {
				t.Fatalf("java printed too few lines: %q", out)
			}
			javaPart, err := strconv.Atoi(sc.Text())
			if err != nil {
				t.Fatalf("java output %q", sc.Text())
			}
			if k == "" {
				continue // an empty Key means no key: no hashing, as with Java's null key
			}
			if got := partitionOf(t, k, n); got != int32(javaPart) {
				t.Errorf("key %q, %d partitions: partition %d, the Java client's is %d", k, n, got, javaPart)
			}
			checked++
		}
	}
	t.Logf("%d key/partition-count pairs match the Java client (kafka-clients %s)", checked, filepath.Base(jars[0]))

	// End to end on the real cluster: where records land.
	brokers := kafkaBrokers(t)
	topic := uniqueName("murmur2")
	createTopic(t, brokers, topic, 6, nil)
	pub, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var msgs []*reliable.Message
	for _, k := range keys[1:] {
		msgs = append(msgs, &reliable.Message{Topic: topic, Key: k, Payload: []byte(k)})
	}
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	want := map[string]int32{}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, k := range keys {
		if k == "" {
			continue
		}
		// The Java output line of (k, 6 partitions).
		for j, n := range partitionCounts {
			if n == 6 {
				p, _ := strconv.Atoi(lines[i*len(partitionCounts)+j])
				want[k] = int32(p)
			}
		}
	}
	for _, r := range readAll(t, brokers, topic) {
		if k := string(r.Key); r.Partition != want[k] {
			t.Errorf("key %q landed in partition %d, the Java client would use %d", k, r.Partition, want[k])
		}
	}
}

// javaPartitionSrc reads "partitions<TAB>key" lines and prints the partition
// the Java producer's default partitioner picks for the UTF-8 key.
const javaPartitionSrc = `
import java.io.*;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;

public class Partition {
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(new BufferedOutputStream(System.out), false, "UTF-8");
        String line;
        while ((line = in.readLine()) != null) {
            String[] f = line.split("\t", 2);
            int n = Integer.parseInt(f[0]);
            byte[] key = f.length > 1 ? f[1].getBytes(StandardCharsets.UTF_8) : new byte[0];
            out.println(BuiltInPartitioner.partitionForKey(key, n));
        }
        out.flush();
    }
}
`
