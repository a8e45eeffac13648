SELECT kv.get('default', '0');
