// Transaction settings through tusk's kv database as pgjdbc makes them (tests/integration/
// test_kv_txn.py): setTransactionIsolation (SET SESSION CHARACTERISTICS AS TRANSACTION ...),
// getTransactionIsolation (SHOW TRANSACTION ISOLATION LEVEL), setReadOnly with autocommit off
// (BEGIN READ ONLY) and on. Prints one line per step. Arguments: host port user key.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class KvIsolation {
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

    static String show(Connection c, String setting) throws Exception {
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SHOW " + setting)) {
            r.next();
            return r.getString(1);
        }
    }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/kv?user=" + a[2] + "&prepareThreshold=1&sslmode=disable";
        String key = a[3];
        try (Connection c = DriverManager.getConnection(url)) {
            System.out.println("default " + c.getTransactionIsolation());
            int[] levels = { Connection.TRANSACTION_SERIALIZABLE, Connection.TRANSACTION_REPEATABLE_READ,
                             Connection.TRANSACTION_READ_COMMITTED };
            c.setAutoCommit(false);
            for (int level : levels) {
                c.setTransactionIsolation(level);
                one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", key, "{\"level\": " + level + "}");
                System.out.println("level " + c.getTransactionIsolation() + " inside " + show(c, "transaction_isolation"));
                c.commit();
            }
            c.setReadOnly(true);
            System.out.println("read only get " + one(c, "SELECT kv.get(?, ?)", "default", key));
            try {
                one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", key, "{\"ro\": 1}");
                System.out.println("read only put succeeded");
            } catch (SQLException e) {
                System.out.println("read only put " + e.getSQLState());
            }
            c.rollback();
            c.setReadOnly(false);
            c.setAutoCommit(true);
            System.out.println("after " + one(c, "SELECT kv.get(?, ?)", "default", key));
        }
    }
}
