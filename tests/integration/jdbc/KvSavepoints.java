// Savepoints through tusk's kv database as pgjdbc makes them (tests/integration/test_kv_txn.py):
// Connection.setSavepoint / rollback(Savepoint) / releaseSavepoint with autocommit off, and
// autosave=always (a savepoint before each statement, rolled back to when it fails, so the
// transaction goes on). The same program runs against a shard database: its lines must be the
// same. Prints one line per step. Arguments: host port database user key.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;

public class KvSavepoints {
    static String one(Connection c, String sql, String... args) throws SQLException {
        try (PreparedStatement p = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++)
                p.setString(i + 1, args[i]);
            try (ResultSet r = p.executeQuery()) {
                r.next();
                return r.getString(1);
            }
        }
    }

    static String put(Connection c, String key, int v) throws SQLException {
        return one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", key, "{\"v\": " + v + "}") == null ? "" : "put " + v;
    }

    static String get(Connection c, String key) throws SQLException {
        return one(c, "SELECT kv.get(?, ?)", "default", key);
    }

    interface Step {
        void run() throws SQLException;
    }

    /* "what succeeded", or "what SQLSTATE" */
    static void attempt(String what, Step step) {
        try {
            step.run();
            System.out.println(what + " succeeded");
        } catch (SQLException e) {
            System.out.println(what + " " + e.getSQLState());
        }
    }

    public static void main(String[] a) throws Exception {
        String base = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2] + "?user=" + a[3] + "&sslmode=disable";
        String key = a[4];
        try (Connection c = DriverManager.getConnection(base + "&prepareThreshold=1")) {
            c.setAutoCommit(false);
            Savepoint first = c.setSavepoint();
            put(c, key, 1);
            c.rollback(first);
            System.out.println("after rollback to the first " + get(c, key));
            put(c, key, 2);
            Savepoint named = c.setSavepoint("Named one");
            put(c, key, 3);
            attempt("bad put", () -> one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", key, "{not json"));
            attempt("get in the aborted transaction", () -> get(c, key));
            c.rollback(named);
            System.out.println("after rollback to the named " + get(c, key));
            Savepoint inner = c.setSavepoint();
            put(c, key, 4);
            c.releaseSavepoint(inner);
            c.releaseSavepoint(named);
            attempt("rollback to a released savepoint", () -> c.rollback(named));
            c.rollback();
            System.out.println("after rollback " + get(c, key));
            put(c, key, 5);
            c.setSavepoint("x");
            put(c, key, 6);
            c.commit();
            System.out.println("committed " + get(c, key));
        }
        try (Connection c = DriverManager.getConnection(base + "&autosave=always")) {
            c.setAutoCommit(false);
            for (int i = 0; i < 300; i++) /* reads first: the first write makes all their savepoints on the shard */
                get(c, key);
            System.out.println("autosave first write answered: " + put(c, key, 7));
            attempt("autosave bad put", () -> one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", key, "{not json"));
            System.out.println("autosave goes on " + get(c, key));
            for (int i = 0; i < 300; i++) /* a savepoint before each, none released */
                get(c, key);
            attempt("autosave bad put after 300 statements", () -> one(c, "SELECT kv.put(?, ?, ?::jsonb)", "default", key, "{not json"));
            put(c, key, 8);
            c.commit();
            System.out.println("autosave committed " + get(c, key));
        }
    }
}
