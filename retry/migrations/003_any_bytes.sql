-- Keys, message IDs and header values are arbitrary bytes (see encode.go):
-- values text cannot hold are stored as chr(1) || 'b64:' || base64, and the
-- indexed lane and message_id hold a value over 512 bytes as chr(1) ||
-- 'sha256:' || hex digest, with the exact ID in message_id_full. Rows
-- written before hold text-safe values, which read back unchanged; only
-- their long lanes and IDs (at most about 2.7 KB, the btree's limit) are
-- rewritten here to the digest form the code now looks them up by.
ALTER TABLE {{.Table}} ADD COLUMN IF NOT EXISTS message_id_full text;
UPDATE {{.Table}} SET message_id_full = message_id,
    message_id = chr(1) || 'sha256:' || encode(sha256(convert_to(message_id, 'UTF8')), 'hex')
  WHERE octet_length(message_id) > 512 AND left(message_id, 1) <> chr(1);
UPDATE {{.Table}} SET
    lane = left(lane, 2) || chr(1) || 'sha256:' || encode(sha256(convert_to(substr(lane, 3), 'UTF8')), 'hex')
  WHERE octet_length(lane) > 514 AND substr(lane, 3, 1) <> chr(1);
UPDATE {{qual "_leases"}} SET
    lane = left(lane, 2) || chr(1) || 'sha256:' || encode(sha256(convert_to(substr(lane, 3), 'UTF8')), 'hex')
  WHERE octet_length(lane) > 514 AND substr(lane, 3, 1) <> chr(1);
