\set i random(0, 3999)
\set a :i + 4000
\set b :i + 8000
\set c :i + 12000
\set d :i + 16000
\set e :i + 20000
\set f :i + 24000
\set g :i + 28000
SELECT kv.put_many('default', '{:i,:a,:b,:c,:d,:e,:f,:g}', '{1,2,3,4,5,6,7,8}');
