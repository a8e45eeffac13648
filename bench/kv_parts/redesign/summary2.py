"""Summarize layouts.sh wall's log: per variant and set, the median us per call; per variant, the median
over rounds of each kv set's rate ratio to plain measured under the same layout in the same round.
python3 bench/kv_parts/redesign/summary2.py LOG"""
import sys, statistics as st, collections
rounds = []; loads = []
for l in open(sys.argv[1]):
    p = l.split()
    if p and p[0] == "round": rounds.append({}); loads.append(float(p[4])); continue
    if len(p) == 3 and rounds: rounds[-1].setdefault(p[0], {})[p[1]] = float(p[2])
rounds = [r for r in rounds if all(len(x) == 6 for x in r.values()) and r]
print(f"{len(rounds)} complete rounds, load average (1 min) at round starts: min {min(loads)}, median {st.median(loads)}, max {max(loads)}")
vs = sorted({v for r in rounds for v in r})
sets = ["pput", "put_1shard", "put_2shards", "pget", "get_1shard", "get_2shards"]
print("| variant | " + " | ".join(sets) + " | put_1/pput | put_2/pput | get_1/pget | get_2/pget |")
for v in vs:
    rr = [r[v] for r in rounds if v in r]
    med = [st.median(x[s] for x in rr) for s in sets]
    rat = [st.median(x[b] / x[a] for x in rr) for a, b in (("put_1shard", "pput"), ("put_2shards", "pput"), ("get_1shard", "pget"), ("get_2shards", "pget"))]
    print(f"| {v} | " + " | ".join(f"{m:.1f}" for m in med) + " | " + " | ".join(f"{x:.2f}" for x in rat) + " |")
# paired across variants, same round: kv put time under V / under A
for v in vs:
    if v == "A": continue
    for s in ("put_1shard", "put_2shards"):
        x = [r[v][s] / r["A"][s] for r in rounds if v in r and "A" in r]
        q = st.quantiles(x, n=4) if len(x) > 1 else [x[0], x[0], x[0]]
        print(f"{v} vs A, {s}: time ratio median {st.median(x):.3f} (n={len(x)}, quartiles {q[0]:.3f}-{q[2]:.3f})")
