// Transactions through tusk's kv database as pgjdbc makes them (tests/integration/test_kv_txn.py):
// with autocommit off pgjdbc sends BEGIN in the same batch as the transaction's first statement
// (Parse/Bind/Execute of each, one Sync), then COMMIT or ROLLBACK. Prints one line per step.
// Arguments: host port user key1 key2 (two keys of one shard).
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

public class KvTxn {
    static String one(Connection c, String sql, String... args) throws Exception {
        try (PreparedStatement p = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++)
                p.setString(i + 1, args[i]);
            try (ResultSet r = p.executeQuery()) {
                r.next();
                return r.getString(1);
            }
        }
    }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/kv?user=" + a[2] + "&prepareThreshold=1&sslmode=disable";
        String k1 = a[3], k2 = a[4];
        try (Connection c = DriverManager.getConnection(url); Connection o = DriverManager.getConnection(url)) {
            c.setAutoCommit(false);
            for (int i = 0; i < 3; i++) {
                one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", k1, "{\"i\": " + i + "}");
                one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", k2, "{\"i\": " + i + "}");
                System.out.println("inside " + one(c, "SELECT kv.get(?, ?)", "default", k1) + " other "
                                   + one(o, "SELECT kv.get(?, ?)", "default", k1));
                if (i == 1) {
                    c.rollback();
                    System.out.println("rolled back");
                } else {
                    c.commit();
                    System.out.println("committed");
                }
                System.out.println("after " + one(o, "SELECT kv.get(?, ?)", "default", k1) + " "
                                   + one(o, "SELECT kv.get(?, ?)", "default", k2));
            }
            // a fetch size inside a transaction: pgjdbc binds a named portal and executes it
            // with a row limit, twice (the second time with a statement it prepared)
            for (int round = 0; round < 2; round++) {
                try (PreparedStatement p = c.prepareStatement("SELECT * FROM kv.get_many(?, ?)")) {
                    p.setFetchSize(1);
                    p.setString(1, "default");
                    p.setArray(2, c.createArrayOf("text", new String[] { k1, k2 }));
                    StringBuilder line = new StringBuilder("fetched");
                    try (ResultSet r = p.executeQuery()) {
                        while (r.next())
                            line.append(' ').append(r.getString(1)).append('=').append(r.getString(2));
                    }
                    System.out.println(line);
                }
            }
            c.commit();
        }
    }
}
