-- Keys, IDs, types and headers are arbitrary bytes (see encode.go): values
-- text cannot hold are stored as chr(1) || 'b64:' || base64, and a lane
-- whose key or ID form is over 512 bytes is 'k:' (or 'm:') || chr(1) ||
-- 'sha256:' || hex digest. Rows written before hold text-safe values, which
-- read back unchanged; only their long lanes (at most about 2.7 KB, the
-- btree's limit) are rewritten to the form Add now writes, so a key's old
-- and new rows stay one lane, in order.
UPDATE reliable_outbox SET
    lane = left(lane, 2) || chr(1) || 'sha256:' || encode(sha256(convert_to(substr(lane, 3), 'UTF8')), 'hex')
  WHERE octet_length(lane) > 514 AND substr(lane, 3, 1) <> chr(1);
UPDATE reliable_outbox_leases SET
    lane = left(lane, 2) || chr(1) || 'sha256:' || encode(sha256(convert_to(substr(lane, 3), 'UTF8')), 'hex')
  WHERE octet_length(lane) > 514 AND substr(lane, 3, 1) <> chr(1);
-- Writer locks carry no state: a long lane's row is simply dropped.
DELETE FROM reliable_outbox_keys WHERE octet_length(lane) > 514;
