SELECT kv.put('default', '0', '{"n": 1}');
