#!/usr/bin/env python3
"""Print the CREATE statements of the named kv functions from a src/kv/schema.c (for calls.sh;
docs/kv.md, "Speed", fifteenth step): python3 functions.py SCHEMA_C NAME...

    git show 79f194f:src/kv/schema.c > /tmp/old.c
    python3 bench/kv_parts/functions.py /tmp/old.c kv._now_us kv._upsert > /tmp/old.sql"""
import re
import sys

text = open(sys.argv[1]).read()
sql = "".join(s.encode().decode("unicode_escape") for s in re.findall(r'"((?:[^"\\]|\\.)*)"', text))
out = []
for name in sys.argv[2:]:
    i = sql.index(f"CREATE OR REPLACE FUNCTION {name}(")
    j = sql.find("\nCREATE ", i + 10)
    body = sql[i:j if j > 0 else len(sql)]
    m = re.search(r"AS (\$\w*\$)", body)
    end = body.index(m.group(1) + ";", m.end()) + len(m.group(1)) + 1 if m else body.index(";\n") + 1
    out.append(body[:end])
print("\n\n".join(out))
