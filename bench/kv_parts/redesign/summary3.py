"""Summarize layouts.sh cpu's log (or logical.py's): medians per variant and set of wall, tusk CPU and PostgreSQL CPU (us
per call), and paired per round the kv put's / plain upsert's. python3 .../summary3.py LOG"""
import collections, re, statistics as st, sys
d = collections.defaultdict(lambda: collections.defaultdict(list)); loads = []; rnd = -1
for l in open(sys.argv[1]):
    p = l.split()
    if p and p[0] == "round": rnd += 1; loads.append(float(p[4])); continue
    w = re.search(r"wall +([\d.]+) us, tusk +([\d.]+) us, postgres +([\d.]+)", l)
    if w: d[p[0]][p[1]].append((rnd, *map(float, w.groups())))
print(f"{rnd + 1} rounds, load (1 min) at round starts {loads}")
print("| variant | set | wall us | tusk CPU us | postgres CPU us | wall rate / plain (paired median) | postgres CPU - plain's (paired median) |")
for v in sorted(d):
    pp = {x[0]: x for x in d[v]["pput"]}
    for s in ("pput", "put_1shard", "put_2shards"):
        x = d[v][s]
        ratio = st.median(pp[r][1] / w for r, w, _, _ in x if r in pp)
        dpg = st.median(c - pp[r][3] for r, _, _, c in x if r in pp)
        print(f"| {v} | {s} | {st.median(a[1] for a in x):.1f} | {st.median(a[2] for a in x):.1f} | "
              f"{st.median(a[3] for a in x):.1f} | {ratio:.2f} | {dpg:+.1f} |")
