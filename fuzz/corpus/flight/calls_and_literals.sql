SELECT abs(a), count(*) FROM t WHERE b = 'x' AND c = 1.5e3 -- 'y
