package kafka

// Test helpers for the external test package (kafka_test), which exists so
// that tests can import packages that import this one (consumer).
var (
	KafkaBrokers = kafkaBrokers
	UniqueName   = uniqueName
	CreateTopic  = createTopic
	TestConfig   = testConfig
	ReadAll      = readAll
	FromRecord   = fromRecord
	TestLogger   = testLogger
	AdminClient  = adminClient
	Committed    = committedOffsets
	TestClient   = newTestClient
)
