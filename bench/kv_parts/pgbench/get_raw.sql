\set i random(1, 10000)
SELECT d.value FROM kv.data d WHERE d.ns = 'default' AND d.key = 'k' || :i AND d.value IS NOT NULL AND (d.expires_at IS NULL OR d.expires_at > now());
