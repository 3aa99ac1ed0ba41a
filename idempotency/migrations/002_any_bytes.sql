-- Message IDs are arbitrary bytes (see encode.go): records are keyed by an
-- injective text form, and an ID whose form is over 512 bytes by chr(1) ||
-- 'sha256:' || its hex digest. Older records hold text-safe IDs, which keep
-- their key; only long ones (at most about 2.7 KB, the btree's limit) are
-- rewritten to the digest the store now looks them up by.
UPDATE {{.Table}} SET id = chr(1) || 'sha256:' || encode(sha256(convert_to(id, 'UTF8')), 'hex')
  WHERE octet_length(id) > 512 AND left(id, 1) <> chr(1);
