import java.io.*;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.largeobject.LargeObject;
import org.postgresql.largeobject.LargeObjectManager;

/**
 * pgjdbc (Debian's libpostgresql-jdbc-java) the way applications use it, against one target
 * (PostgreSQL direct, tusk, or PgBouncer). Run by tests/integration/test_drivers.py (direct and
 * through tusk, outputs compared) and bench/drivers.sh. No build step:
 *   java -cp /usr/share/java/postgresql.jar DriverSuite.java HOST PORT DB USER [CASE ...]
 *   ... DriverSuite.java HOST PORT DB USER --list
 *   ... DriverSuite.java HOST PORT DB USER --load THREADS OPS
 * Cases print one JSON line each: {"case": NAME, "out": WHAT IT SAW}, holding only what a correct
 * server answers the same way every run. --load runs THREADS connections x OPS checked operations
 * (thread t at prepareThreshold=1 when t is even, the driver's default 5 when odd; its default
 * isolation repeatable read, serializable or read committed by t % 3) and prints
 * "RESULT ok=N bad=N final_bad=N seconds=S" and the first errors; there a stall is reported and
 * the run goes on (see main).
 * Env TAG: prefix of the tables this run makes; TLS_ALL=1 with TLS_CA: every connection to the
 * target over TLS (sslmode=verify-ca against TLS_CA). Exit 0 whatever the cases saw; 3 when the watchdog
 * fired: a connection made no progress for 10 s (it prints which one and what it was doing).
 */
public class DriverSuite {
    static String host, db, user, tag;
    static int port;
    static final long STALL_MS = 10_000;
    static final ConcurrentHashMap<String, String[]> doing = new ConcurrentHashMap<>();

    static void step(String label, String what) {
        doing.put(label, new String[]{what, Long.toString(System.currentTimeMillis())});
    }

    static void done(String label) { doing.remove(label); }

    static String url(String params) {
        String u = "jdbc:postgresql://" + host + ":" + port + "/" + db + "?user=" + user
                + (System.getenv("TLS_ALL") != null
                   ? "&sslmode=verify-ca&sslrootcert=" + System.getenv("TLS_CA") : "&sslmode=disable")
                + "&connectTimeout=30";
        return params == null || params.isEmpty() ? u : u + "&" + params;
    }

    static Connection connect(String label, String params) throws SQLException {
        step(label, "connect");
        Connection c = DriverManager.getConnection(url(params));
        done(label);
        return c;
    }

    static void admin(String... sqls) throws SQLException {
        try (Connection c = connect("admin", "prepareThreshold=0"); Statement s = c.createStatement()) {
            for (String sql : sqls) { step("admin", sql); s.execute(sql); done("admin"); }
        }
    }

    static String q(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\') b.append('\\').append(ch);
            else if (ch < 0x20) b.append(String.format("\\u%04x", (int) ch));
            else b.append(ch);
        }
        return b.append('"').toString();
    }

    static String err(Exception e) {
        if (e instanceof SQLException && ((SQLException) e).getSQLState() != null)
            return "{\"error\": " + q(((SQLException) e).getSQLState()) + "}";
        return "{\"error\": " + q(e.getClass().getSimpleName()) + "}";
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new IllegalStateException("mismatch: " + what);
    }

    // ---- the load: every result checked -------------------------------------------------------
    static final AtomicLong okOps = new AtomicLong(), badOps = new AtomicLong();
    static final List<String> errors = Collections.synchronizedList(new ArrayList<>());

    static void setupLoad(int threads) throws SQLException {
        List<String> s = new ArrayList<>(List.of(
                "DROP TABLE IF EXISTS " + tag + "_items", "DROP TABLE IF EXISTS " + tag + "_counter",
                "CREATE TABLE " + tag + "_items(id bigserial primary key, thread int not null, op int not null, "
                        + "k int not null, amount numeric(12,2))",
                "CREATE INDEX ON " + tag + "_items(thread, op, k)",
                "CREATE TABLE " + tag + "_counter(thread int primary key, n bigint not null)",
                "INSERT INTO " + tag + "_counter SELECT g, 0 FROM generate_series(0, " + (threads - 1) + ") g"));
        for (int t = 0; t < threads; t++) {
            s.add("DROP SCHEMA IF EXISTS " + tag + "_s" + t + " CASCADE");
            s.add("CREATE SCHEMA " + tag + "_s" + t);
            s.add("CREATE TABLE " + tag + "_s" + t + ".marker(v int)");
            s.add("INSERT INTO " + tag + "_s" + t + ".marker VALUES (" + t + ")");
        }
        admin(s.toArray(new String[0]));
    }

    static String[] runLoad(int threads, int ops) throws Exception {
        okOps.set(0); badOps.set(0); errors.clear();
        setupLoad(threads);
        long[] committed = new long[threads];
        ExecutorService ex = Executors.newFixedThreadPool(threads);
        List<Future<?>> fs = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int tid = t;
            fs.add(ex.submit(() -> { committed[tid] = loadThread(tid, ops); return null; }));
        }
        for (Future<?> f : fs) {
            try { f.get(); } catch (ExecutionException e) {
                badOps.incrementAndGet();
                errors.add("thread crashed: " + e.getCause());
            }
        }
        ex.shutdown();
        List<String> finalBad = new ArrayList<>();
        try (Connection c = connect("verify", "prepareThreshold=0"); Statement s = c.createStatement()) {
            for (int t = 0; t < threads; t++) {
                ResultSet rs = s.executeQuery("SELECT n FROM " + tag + "_counter WHERE thread = " + t);
                rs.next();
                if (rs.getLong(1) != committed[t])
                    finalBad.add("thread " + t + ": counter " + rs.getLong(1) + ", committed increments " + committed[t]);
            }
            ResultSet rs = s.executeQuery("SELECT count(*) FROM " + tag + "_items WHERE op = 3");
            rs.next();
            if (rs.getLong(1) != 0) finalBad.add(rs.getLong(1) + " rolled-back rows visible");
            s.execute("DROP TABLE " + tag + "_items");
            s.execute("DROP TABLE " + tag + "_counter");
            for (int t = 0; t < threads; t++) s.execute("DROP SCHEMA " + tag + "_s" + t + " CASCADE");
        }
        return finalBad.toArray(new String[0]);
    }

    /** One connection's operations; returns how many counter increments it committed. */
    static long loadThread(int t, int ops) throws Exception {
        String label = "thread " + t + " (prepareThreshold=" + (t % 2 == 0 ? 1 : 5) + ")";
        String params = (t % 2 == 0 ? "prepareThreshold=1&" : "") + "ApplicationName=" + tag + t;
        Connection c = connect(label, params);
        String schema = tag + "_s" + t;
        c.setSchema(schema);
        int iso = t % 3 == 0 ? Connection.TRANSACTION_REPEATABLE_READ
                : t % 3 == 1 ? Connection.TRANSACTION_SERIALIZABLE : Connection.TRANSACTION_READ_COMMITTED;
        String isoName = t % 3 == 0 ? "repeatable read" : t % 3 == 1 ? "serializable" : "read committed";
        c.setTransactionIsolation(iso);
        String it = "public." + tag + "_items", ct = "public." + tag + "_counter";
        PreparedStatement psSel = c.prepareStatement("SELECT ?::int + ?::int AS s, ?::text AS t");
        PreparedStatement psTypes = c.prepareStatement(
                "SELECT ?::numeric(12,2) * 2, ?::timestamptz + interval '1 day', ?::bigint[], ?::bytea, ?::bool");
        PreparedStatement psMarker = c.prepareStatement("SELECT v, current_schema(), current_setting('application_name') FROM marker");
        long committed = 0;
        for (int i = 0, attempt = 0; i < ops; i++) {
            int kind = i % 7;
            step(label, "op " + i + " kind " + kind);
            try {
                switch (kind) {
                    case 0: { // kept prepared select, autocommit
                        psSel.setInt(1, i); psSel.setInt(2, t); psSel.setString(3, "x" + t + "_" + i);
                        try (ResultSet rs = psSel.executeQuery()) {
                            check(rs.next(), "row");
                            check(rs.getInt(1) == i + t && rs.getString(2).equals("x" + t + "_" + i), "select");
                            check(!rs.next(), "one row");
                        }
                        break;
                    }
                    case 1: { // a batch insert in a transaction, read back
                        c.setAutoCommit(false);
                        try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + it + "(thread, op, k, amount) VALUES (?,1,?,?)")) {
                            for (int j = 0; j < 10; j++) {
                                ps.setInt(1, t); ps.setInt(2, i * 100 + j); ps.setBigDecimal(3, new BigDecimal(j + ".25"));
                                ps.addBatch();
                            }
                            int[] r = ps.executeBatch();
                            check(r.length == 10, "batch length");
                            for (int x : r) check(x == 1 || x == Statement.SUCCESS_NO_INFO, "batch count " + x);
                        }
                        try (PreparedStatement ps = c.prepareStatement(
                                "SELECT count(*), sum(amount) FROM " + it + " WHERE thread=? AND op=1 AND k BETWEEN ? AND ?")) {
                            ps.setInt(1, t); ps.setInt(2, i * 100); ps.setInt(3, i * 100 + 99);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                check(rs.getLong(1) == 10 && rs.getBigDecimal(2).compareTo(new BigDecimal("47.50")) == 0,
                                        "batch rows " + rs.getLong(1) + " sum " + rs.getBigDecimal(2));
                            }
                        }
                        c.commit();
                        c.setAutoCommit(true);
                        break;
                    }
                    case 2: { // a fetch size inside a transaction: a named portal, several Executes
                        c.setAutoCommit(false);
                        try (PreparedStatement ps = c.prepareStatement("SELECT g, md5(g::text) FROM generate_series(1, ?) g ORDER BY g")) {
                            ps.setFetchSize(7);
                            ps.setInt(1, 100 + t);
                            long n = 0, sum = 0;
                            try (ResultSet rs = ps.executeQuery()) {
                                while (rs.next()) {
                                    n++; sum += rs.getInt(1);
                                    check(rs.getInt(1) == n && rs.getString(2).length() == 32, "cursor row");
                                    if (n == 20) { // a plain statement between two fetches
                                        try (Statement s2 = c.createStatement(); ResultSet r2 = s2.executeQuery("SELECT v FROM marker")) {
                                            r2.next(); check(r2.getInt(1) == t, "interleaved marker");
                                        }
                                    }
                                }
                            }
                            long N = 100 + t;
                            check(n == N && sum == N * (N + 1) / 2, "cursor rows " + n);
                        }
                        c.commit();
                        c.setAutoCommit(true);
                        break;
                    }
                    case 3: { // rolled back: leaves nothing
                        c.setAutoCommit(false);
                        try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + it + "(thread, op, k) VALUES (?,3,?) RETURNING id")) {
                            ps.setInt(1, t); ps.setInt(2, i);
                            try (ResultSet rs = ps.executeQuery()) { check(rs.next(), "returning"); }
                        }
                        c.rollback();
                        c.setAutoCommit(true);
                        try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM " + it + " WHERE thread=? AND op=3")) {
                            ps.setInt(1, t);
                            try (ResultSet rs = ps.executeQuery()) { rs.next(); check(rs.getLong(1) == 0, "rolled back row visible"); }
                        }
                        break;
                    }
                    case 4: { // read-modify-write with FOR UPDATE
                        c.setAutoCommit(false);
                        long n;
                        try (PreparedStatement ps = c.prepareStatement("SELECT n FROM " + ct + " WHERE thread=? FOR UPDATE")) {
                            ps.setInt(1, t);
                            try (ResultSet rs = ps.executeQuery()) { rs.next(); n = rs.getLong(1); }
                        }
                        try (PreparedStatement ps = c.prepareStatement("UPDATE " + ct + " SET n=? WHERE thread=?")) {
                            ps.setLong(1, n + 1); ps.setInt(2, t);
                            check(ps.executeUpdate() == 1, "update count");
                        }
                        c.commit();
                        committed++;
                        c.setAutoCommit(true);
                        try (PreparedStatement ps = c.prepareStatement("SELECT n FROM " + ct + " WHERE thread=?")) {
                            ps.setInt(1, t);
                            try (ResultSet rs = ps.executeQuery()) { rs.next(); check(rs.getLong(1) == n + 1, "counter"); }
                        }
                        break;
                    }
                    case 5: { // session state (search_path by setSchema, application_name, the default
                              // isolation by SET SESSION CHARACTERISTICS) follows the client
                        try (ResultSet rs = psMarker.executeQuery()) {
                            check(rs.next(), "marker row");
                            check(rs.getInt(1) == t && schema.equals(rs.getString(2)) && (tag + t).equals(rs.getString(3)),
                                    "marker " + rs.getInt(1) + " schema " + rs.getString(2) + " app " + rs.getString(3));
                        }
                        c.setAutoCommit(false);
                        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT current_setting('transaction_isolation')")) {
                            rs.next();
                            check(isoName.equals(rs.getString(1)), "isolation " + rs.getString(1) + ", want " + isoName);
                        }
                        c.commit();
                        c.setAutoCommit(true);
                        break;
                    }
                    default: { // a kept statement with many types (binary transfer past the threshold)
                        BigDecimal in = new BigDecimal(t + "." + String.format("%02d", i % 100));
                        Timestamp ts = Timestamp.valueOf("2024-02-28 12:00:00");
                        psTypes.setBigDecimal(1, in);
                        psTypes.setTimestamp(2, ts);
                        psTypes.setArray(3, c.createArrayOf("bigint", new Long[]{(long) t, (long) i, 1L << 40}));
                        psTypes.setBytes(4, new byte[]{(byte) t, (byte) (i & 0xff), 0, (byte) 0xff});
                        psTypes.setBoolean(5, i % 2 == 0);
                        try (ResultSet rs = psTypes.executeQuery()) {
                            rs.next();
                            check(rs.getBigDecimal(1).compareTo(in.multiply(new BigDecimal(2))) == 0, "numeric");
                            check(rs.getTimestamp(2).getTime() - ts.getTime() == 86400000L, "timestamptz");
                            Long[] arr = (Long[]) rs.getArray(3).getArray();
                            check(arr.length == 3 && arr[0] == t && arr[1] == i && arr[2] == (1L << 40), "array");
                            byte[] b = rs.getBytes(4);
                            check(b.length == 4 && b[0] == (byte) t && b[1] == (byte) (i & 0xff) && b[3] == (byte) 0xff, "bytea");
                            check(rs.getBoolean(5) == (i % 2 == 0), "bool");
                        }
                    }
                }
                okOps.incrementAndGet();
                attempt = 0;
            } catch (Exception e) {
                if (e instanceof SQLException && "40001".equals(((SQLException) e).getSQLState()) && attempt < 10) {
                    // a serialization failure (repeatable read, serializable): run it again
                    try { c.rollback(); c.setAutoCommit(true); } catch (Exception e2) { }
                    attempt++;
                    i--;
                    continue;
                }
                badOps.incrementAndGet();
                attempt = 0;
                if (errors.size() < 10)
                    errors.add(label + " op " + i + " kind " + kind + ": " + e.getClass().getSimpleName()
                            + (e instanceof SQLException ? " [" + ((SQLException) e).getSQLState() + "]" : "") + " "
                            + String.valueOf(e.getMessage()).split("\n")[0]);
                try {
                    if (!c.getAutoCommit()) { c.rollback(); c.setAutoCommit(true); }
                } catch (Exception e2) { // broken: a new connection, as an application's pool would
                    try { c.close(); } catch (Exception e3) { }
                    c = connect(label, params);
                    c.setSchema(schema);
                    c.setTransactionIsolation(iso);
                    psSel = c.prepareStatement("SELECT ?::int + ?::int AS s, ?::text AS t");
                    psTypes = c.prepareStatement("SELECT ?::numeric(12,2) * 2, ?::timestamptz + interval '1 day', ?::bigint[], ?::bytea, ?::bool");
                    psMarker = c.prepareStatement("SELECT v, current_schema(), current_setting('application_name') FROM marker");
                }
            } finally {
                done(label);
            }
        }
        c.close();
        return committed;
    }

    // ---- the cases ----------------------------------------------------------------------------
    static final LinkedHashMap<String, Callable<String>> CASES = new LinkedHashMap<>();

    static String rowOf(PreparedStatement ps) {
        try {
            ps.setInt(1, 1);
            StringBuilder sb = new StringBuilder("{");
            try (ResultSet rs = ps.executeQuery()) {
                ResultSetMetaData md = rs.getMetaData();
                while (rs.next())
                    for (int i = 1; i <= md.getColumnCount(); i++)
                        sb.append(i > 1 ? ", " : "").append(q(md.getColumnName(i))).append(": ").append(q(String.valueOf(rs.getString(i))));
            }
            return sb.append("}").toString();
        } catch (Exception e) {
            return err(e);
        }
    }

    static final String[][] SCHEMA_CHANGES = {
        {"add_column", "CREATE TABLE %T(id int, a int); INSERT INTO %T VALUES (1, 10)", "ALTER TABLE %T ADD COLUMN c text DEFAULT 'new'"},
        {"int_to_bigint", "CREATE TABLE %T(id int, a int); INSERT INTO %T VALUES (1, 10)", "ALTER TABLE %T ALTER COLUMN a TYPE bigint"},
        {"int_to_text", "CREATE TABLE %T(id int, a int); INSERT INTO %T VALUES (1, 10)", "ALTER TABLE %T ALTER COLUMN a TYPE text"},
        {"drop_column", "CREATE TABLE %T(id int, a int, b text); INSERT INTO %T VALUES (1, 10, 'bee')", "ALTER TABLE %T DROP COLUMN a"},
        {"bigint_to_int", "CREATE TABLE %T(id int, a bigint); INSERT INTO %T VALUES (1, 10)", "ALTER TABLE %T ALTER COLUMN a TYPE int"},
    };

    /** A server-prepared statement kept open across a schema change made by another connection. */
    static String schemaChange(int threshold) throws Exception {
        StringBuilder out = new StringBuilder("{");
        String label = "schema change (prepareThreshold=" + threshold + ")";
        try (Connection c = connect(label, "prepareThreshold=" + threshold)) {
            int n = 0;
            for (String[] cs : SCHEMA_CHANGES) {
                String tn = tag + "_sc" + threshold + "_" + n;
                admin("DROP TABLE IF EXISTS " + tn, cs[1].replace("%T", tn));
                PreparedStatement ps = c.prepareStatement("SELECT * FROM " + tn + " WHERE id = ?");
                StringBuilder runs = new StringBuilder("[");
                for (int k = 0; k < threshold + 1; k++) { step(label, cs[0] + " before"); runs.append(k > 0 ? ", " : "").append(rowOf(ps)); done(label); }
                admin(cs[2].replace("%T", tn));
                for (int k = 0; k < 3; k++) { step(label, cs[0] + " after"); runs.append(", ").append(rowOf(ps)); done(label); }
                ps.close();
                admin("DROP TABLE " + tn);
                out.append(n++ > 0 ? ", " : "").append(q(cs[0])).append(": ").append(runs).append("]");
            }
        }
        return out.append("}").toString();
    }

    static {
        CASES.put("concurrent_threshold_1_and_5", () -> {
            // more connections than the pooler's servers; half of them at prepareThreshold=1
            String[] finalBad = runLoad(8, 140);
            StringBuilder b = new StringBuilder("{\"ok\": " + okOps.get() + ", \"bad\": " + badOps.get() + ", \"final_bad\": [");
            for (int i = 0; i < finalBad.length; i++) b.append(i > 0 ? ", " : "").append(q(finalBad[i]));
            b.append("], \"errors\": [");
            synchronized (errors) { for (int i = 0; i < errors.size(); i++) b.append(i > 0 ? ", " : "").append(q(errors.get(i))); }
            return b.append("]}").toString();
        });
        CASES.put("schema_change_threshold_1", () -> schemaChange(1));
        CASES.put("schema_change_threshold_5", () -> schemaChange(5));
        CASES.put("fresh_prepare_after_schema_change", () -> {
            // a new connection's first prepare of a text another connection prepared earlier
            String tn = tag + "_fp";
            admin("DROP TABLE IF EXISTS " + tn, "CREATE TABLE " + tn + "(id int, a int)", "INSERT INTO " + tn + " VALUES (1, 10)");
            String sql = "SELECT * FROM " + tn + " WHERE id = ?";
            StringBuilder out = new StringBuilder("{");
            try (Connection a = connect("fp-a", "prepareThreshold=1"); PreparedStatement ps = a.prepareStatement(sql)) {
                out.append("\"a\": [").append(rowOf(ps)).append(", ").append(rowOf(ps)).append("]");
            }
            admin("ALTER TABLE " + tn + " ADD COLUMN c text DEFAULT 'new'");
            try (Connection b = connect("fp-b", "prepareThreshold=1"); PreparedStatement ps = b.prepareStatement(sql)) {
                out.append(", \"b\": [").append(rowOf(ps)).append(", ").append(rowOf(ps)).append("]");
            }
            admin("DROP TABLE " + tn, "CREATE TABLE " + tn + "(id int, z text)", "INSERT INTO " + tn + " VALUES (1, 'zz')");
            try (Connection c = connect("fp-c", "prepareThreshold=1"); PreparedStatement ps = c.prepareStatement(sql)) {
                out.append(", \"c_after_drop_create\": [").append(rowOf(ps)).append(", ").append(rowOf(ps)).append("]");
            }
            admin("DROP TABLE " + tn);
            return out.append("}").toString();
        });
        CASES.put("schema_change_in_transaction", () -> {
            // in a transaction block nothing may be retried behind the client: PostgreSQL's 0A000
            String tn = tag + "_sct";
            admin("DROP TABLE IF EXISTS " + tn, "CREATE TABLE " + tn + "(id int, a int)", "INSERT INTO " + tn + " VALUES (1, 10)");
            StringBuilder out = new StringBuilder("{");
            try (Connection c = connect("sct", "prepareThreshold=1"); PreparedStatement ps = c.prepareStatement("SELECT * FROM " + tn + " WHERE id = ?")) {
                out.append("\"before\": [").append(rowOf(ps)).append(", ").append(rowOf(ps)).append("]");
                admin("ALTER TABLE " + tn + " ALTER COLUMN a TYPE bigint");
                c.setAutoCommit(false);
                out.append(", \"in_tx\": ").append(rowOf(ps));
                c.rollback();
                c.setAutoCommit(true);
                out.append(", \"after\": [").append(rowOf(ps)).append(", ").append(rowOf(ps)).append("]");
            }
            admin("DROP TABLE " + tn);
            return out.append("}").toString();
        });
    }

    // ---- what applications do with pgjdbc beyond queries ----------------------------------------

    /** The rows of a query as a JSON list of lists of strings. */
    static String rows(Statement st, String sql) throws SQLException {
        StringBuilder b = new StringBuilder("[");
        try (ResultSet rs = st.executeQuery(sql)) {
            int n = rs.getMetaData().getColumnCount(), r = 0;
            while (rs.next()) {
                b.append(r++ > 0 ? ", [" : "[");
                for (int i = 1; i <= n; i++) b.append(i > 1 ? ", " : "").append(q(String.valueOf(rs.getString(i))));
                b.append("]");
            }
        }
        return b.append("]").toString();
    }

    /** Schemas prefix0..prefix(n-1), each with a table marker holding its number. */
    static void markerSchemas(String prefix, int n) throws SQLException {
        List<String> setup = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            setup.add("DROP SCHEMA IF EXISTS " + prefix + i + " CASCADE");
            setup.add("CREATE SCHEMA " + prefix + i);
            setup.add("CREATE TABLE " + prefix + i + ".marker AS SELECT " + i + " AS v");
        }
        admin(setup.toArray(new String[0]));
    }

    static void dropSchemas(String prefix, int n) throws SQLException {
        List<String> drop = new ArrayList<>();
        for (int i = 0; i < n; i++) drop.add("DROP SCHEMA " + prefix + i + " CASCADE");
        admin(drop.toArray(new String[0]));
    }

    static String attempt(Callable<String> f) {
        try { return f.call(); } catch (Exception e) { return err(e); }
    }

    static {
        CASES.put("large_object", () -> {
            // the fastpath function-call protocol ('F' messages): pgjdbc's LargeObjectManager
            StringBuilder out = new StringBuilder("{");
            byte[] data = new byte[200_000];
            for (int i = 0; i < data.length; i++) data[i] = (byte) (i * 31 + (i >> 8));
            try (Connection c = connect("lo", "")) {
                c.setAutoCommit(false);
                LargeObjectManager lom = c.unwrap(PGConnection.class).getLargeObjectAPI();
                step("lo", "create and write");
                long oid = lom.createLO();
                LargeObject lo = lom.open(oid, LargeObjectManager.READWRITE);
                lo.write(data);
                lo.seek(0);
                byte[] back = lo.read(data.length + 10);
                out.append("\"read_in_tx\": ").append(Arrays.equals(back, data));
                lo.close();
                c.commit();
                step("lo", "read in a new transaction");
                lo = lom.open(oid, LargeObjectManager.READ);
                out.append(", \"size\": ").append(lo.size());
                lo.seek(100_000);
                out.append(", \"at_100000\": ").append(Arrays.equals(lo.read(16), Arrays.copyOfRange(data, 100_000, 100_016)));
                lo.close();
                c.commit();
                step("lo", "a descriptor of a committed transaction");
                final LargeObject stale = lo;
                out.append(", \"stale_descriptor\": ").append(attempt(() -> { stale.read(1); return "\"read\""; }));
                c.rollback();
                lom.delete(oid);
                c.commit();
                out.append(", \"deleted\": ").append(attempt(() -> { lom.open(oid, LargeObjectManager.READ); return "\"opened\""; }));
                c.rollback();
                done("lo");
            }
            return out.append("}").toString();
        });
        CASES.put("copy_manager", () -> {
            String tn = tag + "_copy";
            admin("DROP TABLE IF EXISTS " + tn, "CREATE TABLE " + tn + "(id int primary key, t text)");
            StringBuilder out = new StringBuilder("{");
            try (Connection c = connect("copy", "prepareThreshold=1"); Statement st = c.createStatement()) {
                CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
                StringBuilder csv = new StringBuilder();
                for (int i = 1; i <= 5000; i++) csv.append(i).append(",row ").append(i).append('\n');
                step("copy", "copy in");
                out.append("\"in\": ").append(cm.copyIn("COPY " + tn + " FROM STDIN (FORMAT csv)", new StringReader(csv.toString())));
                step("copy", "copy out");
                StringWriter w = new StringWriter();
                out.append(", \"out_rows\": ").append(cm.copyOut("COPY (SELECT * FROM " + tn + " ORDER BY id) TO STDOUT (FORMAT csv)", w));
                out.append(", \"out_same\": ").append(w.toString().equals(csv.toString()));
                step("copy", "copy in with a bad row");
                out.append(", \"bad_row\": ").append(attempt(() -> Long.toString(
                        cm.copyIn("COPY " + tn + " FROM STDIN (FORMAT csv)", new StringReader("9001,a\nnot a number,b\n9002,c\n")))));
                out.append(", \"after_bad\": ").append(rows(st, "SELECT count(*), max(id) FROM " + tn));
                step("copy", "copy in a rolled back transaction");
                c.setAutoCommit(false);
                cm.copyIn("COPY " + tn + " FROM STDIN", new StringReader("7001\tx\n7002\ty\n"));
                out.append(", \"in_tx\": ").append(rows(st, "SELECT count(*) FROM " + tn));
                c.rollback();
                c.setAutoCommit(true);
                out.append(", \"after_rollback\": ").append(rows(st, "SELECT count(*) FROM " + tn));
                done("copy");
            }
            admin("DROP TABLE " + tn);
            return out.append("}").toString();
        });
        CASES.put("batch", () -> {
            // executeBatch: many Bind/Execute, one Sync; an error in the middle; rewritten inserts
            String tn = tag + "_batch";
            admin("DROP TABLE IF EXISTS " + tn, "CREATE TABLE " + tn + "(id int primary key, v text)");
            StringBuilder out = new StringBuilder("{");
            for (String params : new String[]{"prepareThreshold=1", "reWriteBatchedInserts=true"}) {
                try (Connection c = connect("batch " + params, params); Statement st = c.createStatement()) {
                    String key = params.startsWith("re") ? "rewritten" : "plain";
                    int base = key.equals("plain") ? 0 : 1000;
                    step("batch " + params, "good batch");
                    try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + tn + " VALUES (?, ?)")) {
                        for (int i = 1; i <= 300; i++) { ps.setInt(1, base + i); ps.setString(2, "v" + i); ps.addBatch(); }
                        int[] r = ps.executeBatch();
                        out.append(out.length() > 1 ? ", " : "").append(q(key + "_good")).append(": ").append(r.length);
                        step("batch " + params, "batch with a duplicate");
                        for (int i = 1; i <= 50; i++) { ps.setInt(1, base + 500 + (i == 25 ? -499 : i)); ps.setString(2, "d" + i); ps.addBatch(); }
                        String bad;
                        try { ps.executeBatch(); bad = "\"no error\""; } catch (BatchUpdateException e) { bad = q(e.getSQLState()); }
                        out.append(", ").append(q(key + "_duplicate")).append(": ").append(bad);
                    }
                    step("batch " + params, "in a transaction, then rollback");
                    c.setAutoCommit(false);
                    try (PreparedStatement ps = c.prepareStatement("UPDATE " + tn + " SET v = ? WHERE id = ?")) {
                        for (int i = 1; i <= 100; i++) { ps.setString(1, "u" + i); ps.setInt(2, base + i); ps.addBatch(); }
                        out.append(", ").append(q(key + "_updates")).append(": ").append(Arrays.stream(ps.executeBatch()).sum());
                    }
                    c.rollback();
                    c.setAutoCommit(true);
                    out.append(", ").append(q(key + "_rows")).append(": ").append(rows(st, "SELECT count(*), count(*) FILTER (WHERE v LIKE 'u%') FROM "
                            + tn + " WHERE id BETWEEN " + base + " AND " + (base + 999)));
                    done("batch " + params);
                }
            }
            admin("DROP TABLE " + tn);
            return out.append("}").toString();
        });
        CASES.put("autosave", () -> {
            // autosave=always: a SAVEPOINT before each statement, ROLLBACK TO it on an error, so
            // the transaction goes on; conservative: the same only to survive a cached plan's change
            String tn = tag + "_as";
            admin("DROP TABLE IF EXISTS " + tn, "CREATE TABLE " + tn + "(id int primary key, a int)", "INSERT INTO " + tn + " VALUES (1, 10)");
            StringBuilder out = new StringBuilder("{");
            try (Connection c = connect("autosave", "autosave=always&prepareThreshold=1"); Statement st = c.createStatement()) {
                c.setAutoCommit(false);
                st.executeUpdate("INSERT INTO " + tn + " VALUES (2, 20)");
                out.append("\"div0\": ").append(attempt(() -> rows(st, "SELECT 1 / 0")));
                st.executeUpdate("INSERT INTO " + tn + " VALUES (3, 30)");
                out.append(", \"dup\": ").append(attempt(() -> Integer.toString(st.executeUpdate("INSERT INTO " + tn + " VALUES (1, 0)"))));
                c.commit();
                c.setAutoCommit(true);
                out.append(", \"always\": ").append(rows(st, "SELECT id, a FROM " + tn + " ORDER BY id"));
            }
            try (Connection c = connect("autosave-c", "autosave=conservative&prepareThreshold=1")) {
                PreparedStatement ps = c.prepareStatement("SELECT * FROM " + tn + " WHERE id = ?");
                out.append(", \"before\": [").append(rowOf(ps)).append(", ").append(rowOf(ps)).append("]");
                c.setAutoCommit(false);
                admin("ALTER TABLE " + tn + " ALTER COLUMN a TYPE bigint"); // its cached plan's result changes
                out.append(", \"in_tx_after_change\": ").append(rowOf(ps));
                out.append(", \"in_tx_again\": ").append(rowOf(ps));
                c.commit();
                c.setAutoCommit(true);
                out.append(", \"after\": ").append(rowOf(ps));
                ps.close();
            }
            admin("DROP TABLE " + tn);
            return out.append("}").toString();
        });
        CASES.put("fetch_size", () -> {
            // setFetchSize in a transaction: portals Executed 50 rows at a time (PortalSuspended),
            // two open at once, and the same in autocommit (all rows at once)
            StringBuilder out = new StringBuilder("{");
            try (Connection c = connect("fetch", "prepareThreshold=1")) {
                c.setAutoCommit(false);
                try (Statement a = c.createStatement(); Statement b = c.createStatement()) {
                    a.setFetchSize(50);
                    b.setFetchSize(7);
                    step("fetch", "two portals");
                    ResultSet ra = a.executeQuery("SELECT g, md5(g::text) FROM generate_series(1, 2000) g");
                    ResultSet rb = b.executeQuery("SELECT g FROM generate_series(1, 300) g ORDER BY g DESC");
                    long sa = 0, sb = 0, na = 0, nb = 0;
                    while (true) {
                        boolean ma = ra.next(), mb = rb.next();
                        if (ma) { sa += ra.getLong(1); na++; }
                        if (mb) { sb += rb.getLong(1) * nb; nb++; }
                        if (!ma && !mb) break;
                    }
                    out.append("\"a\": [").append(na).append(", ").append(sa).append("], \"b\": [").append(nb).append(", ").append(sb).append("]");
                }
                c.commit();
                c.setAutoCommit(true);
                try (PreparedStatement ps = c.prepareStatement("SELECT g FROM generate_series(1, ?) g")) {
                    ps.setFetchSize(10);
                    for (int k = 0; k < 3; k++) {
                        ps.setInt(1, 100 + k);
                        long n = 0;
                        try (ResultSet rs = ps.executeQuery()) { while (rs.next()) n += rs.getLong(1); }
                        out.append(", \"autocommit_").append(k).append("\": ").append(n);
                    }
                }
                done("fetch");
            }
            return out.append("}").toString();
        });
        CASES.put("callable", () -> {
            String f = tag + "_fn", p = tag + "_proc";
            admin("CREATE OR REPLACE FUNCTION " + f + "(x int, OUT doubled int, OUT label text) LANGUAGE sql AS "
                    + "$$ SELECT x * 2, 'n' || x $$",
                  "CREATE OR REPLACE PROCEDURE " + p + "(INOUT total int, delta int) LANGUAGE plpgsql AS "
                    + "$$ BEGIN total := total + delta; END $$");
            StringBuilder out = new StringBuilder("{");
            try (Connection c = connect("callable", "prepareThreshold=1")) {
                for (int k = 0; k < 3; k++) {
                    try (CallableStatement cs = c.prepareCall("{call " + f + "(?, ?, ?)}")) {
                        cs.setInt(1, 20 + k);
                        cs.registerOutParameter(2, Types.INTEGER);
                        cs.registerOutParameter(3, Types.VARCHAR);
                        cs.execute();
                        out.append(k > 0 ? ", " : "").append("\"fn").append(k).append("\": [").append(cs.getInt(2)).append(", ").append(q(cs.getString(3))).append("]");
                    }
                    try (CallableStatement cs = c.prepareCall("CALL " + p + "(?, ?)")) {
                        cs.setInt(1, 100);
                        cs.registerOutParameter(1, Types.INTEGER);
                        cs.setInt(2, k);
                        cs.execute();
                        out.append(", \"proc").append(k).append("\": ").append(cs.getInt(1));
                    }
                }
            }
            admin("DROP FUNCTION " + f + "(int)", "DROP PROCEDURE " + p + "(int, int)");
            return out.append("}").toString();
        });
        CASES.put("startup_options", () -> {
            // currentSchema (search_path) and options=-c at startup, per connection, four at once
            // over fewer servers, each reading its own schema's table by an unqualified name
            markerSchemas(tag + "_so", 4);
            StringBuilder out = new StringBuilder("{");
            List<Connection> cs = new ArrayList<>();
            try {
                for (int i = 0; i < 4; i++)
                    cs.add(connect("so" + i, "currentSchema=" + tag + "_so" + i + "&options=-c%20statement_timeout%3D" + (1000 + i)
                            + "%20-c%20DateStyle%3D" + (i % 2 == 0 ? "German" : "SQL,MDY") + "&prepareThreshold=" + (i % 2)));
                for (int round = 0; round < 3; round++)
                    for (int i = 0; i < 4; i++) {
                        step("so" + i, "round " + round);
                        try (Statement st = cs.get(i).createStatement()) {
                            out.append(round + i > 0 ? ", " : "").append("\"r").append(round).append("c").append(i).append("\": ")
                                    .append(rows(st, "SELECT v, current_setting('statement_timeout'), current_setting('DateStyle'), "
                                            + "date '2024-03-05'::text FROM marker"));
                        }
                        done("so" + i);
                    }
            } finally {
                for (Connection c : cs) c.close();
            }
            dropSchemas(tag + "_so", 4);
            return out.append("}").toString();
        });
        CASES.put("read_only_and_timeout", () -> {
            String tn = tag + "_ro";
            admin("DROP TABLE IF EXISTS " + tn, "CREATE TABLE " + tn + "(id int)");
            StringBuilder out = new StringBuilder("{");
            try (Connection c = connect("ro", "readOnlyMode=always"); Connection other = connect("ro-other", "");
                 Statement st = c.createStatement(); Statement ot = other.createStatement()) {
                c.setReadOnly(true);
                out.append("\"ro_insert\": ").append(attempt(() -> Integer.toString(st.executeUpdate("INSERT INTO " + tn + " VALUES (1)"))));
                out.append(", \"other_insert\": ").append(ot.executeUpdate("INSERT INTO " + tn + " VALUES (2)"));
                out.append(", \"ro_read\": ").append(rows(st, "SELECT count(*), current_setting('transaction_read_only') FROM " + tn));
                c.setReadOnly(false);
                out.append(", \"rw_insert\": ").append(st.executeUpdate("INSERT INTO " + tn + " VALUES (3)"));
                step("ro", "query timeout");
                st.setQueryTimeout(1);
                out.append(", \"timeout\": ").append(attempt(() -> rows(st, "SELECT pg_sleep(3)")));
                st.setQueryTimeout(0);
                for (int k = 0; k < 5; k++) out.append(", \"next").append(k).append("\": ").append(attempt(() -> rows(st, "SELECT count(*) FROM " + tn)));
                done("ro");
            }
            admin("DROP TABLE " + tn);
            return out.append("}").toString();
        });
        CASES.put("listen_notify", () -> {
            StringBuilder out = new StringBuilder("{");
            try (Connection l = connect("listener", ""); Connection n = connect("notifier", "");
                 Statement ls = l.createStatement(); Statement ns = n.createStatement()) {
                String ch = tag + "_ch";
                ls.execute("LISTEN " + ch);
                for (int k = 0; k < 3; k++) ns.execute("NOTIFY " + ch + ", 'p" + k + "'");
                n.setAutoCommit(false);
                ns.execute("NOTIFY " + ch + ", 'rolled back'");
                n.rollback();
                ns.execute("NOTIFY " + ch + ", 'in tx'");
                n.commit();
                n.setAutoCommit(true);
                List<String> got = new ArrayList<>();
                long deadline = System.currentTimeMillis() + 5000;
                step("listener", "notifications");
                while (got.size() < 4 && System.currentTimeMillis() < deadline) {
                    PGNotification[] ns2 = l.unwrap(PGConnection.class).getNotifications(500);
                    if (ns2 != null) for (PGNotification x : ns2) got.add(x.getName() + ":" + x.getParameter());
                }
                done("listener");
                out.append("\"got\": [");
                for (int i = 0; i < got.size(); i++) out.append(i > 0 ? ", " : "").append(q(got.get(i).replace(tag, "T")));
                ls.execute("UNLISTEN *");
                ns.execute("NOTIFY " + ch + ", 'after unlisten'");
                PGNotification[] late = l.unwrap(PGConnection.class).getNotifications(300);
                out.append("], \"after_unlisten\": ").append(late == null ? 0 : late.length);
            }
            return out.append("}").toString();
        });
        CASES.put("prepared_set_and_reset", () -> {
            // SET and RESET as PreparedStatements, server-prepared (named) from the first run,
            // run again and again between plain SETs: each run changes the session then, not
            // when it was prepared. Four connections with their own startup search_path
            // (currentSchema) and work_mem (options) over fewer servers, interleaved.
            markerSchemas(tag + "_pr", 5);
            StringBuilder out = new StringBuilder("{");
            List<Connection> cs = new ArrayList<>();
            List<PreparedStatement[]> pss = new ArrayList<>();
            String look = "SELECT v, current_setting('work_mem') FROM marker";
            try {
                for (int i = 0; i < 4; i++) {
                    Connection c = connect("pr" + i, "currentSchema=" + tag + "_pr" + i + "&options=-c%20work_mem%3D" + (2 + i)
                            + "MB&prepareThreshold=1");
                    cs.add(c);
                    pss.add(new PreparedStatement[]{c.prepareStatement("SET search_path TO " + tag + "_pr4"),
                            c.prepareStatement("SET work_mem = '9MB'"), c.prepareStatement("RESET search_path"),
                            c.prepareStatement("RESET ALL")});
                }
                int n = 0;
                for (int round = 0; round < 4; round++)
                    for (int i = 0; i < 4; i++) {
                        step("pr" + i, "round " + round);
                        PreparedStatement[] ps = pss.get(i);
                        try (Statement st = cs.get(i).createStatement()) {
                            st.execute("SET search_path TO " + tag + "_pr" + ((i + 1) % 4));
                            st.execute("SET work_mem = '7MB'");
                            ps[0].execute();
                            ps[1].execute();
                            String a = rows(st, look);
                            st.execute("SET search_path TO " + tag + "_pr" + ((i + 2) % 4));
                            st.execute("SET work_mem = '8MB'");
                            String b = rows(st, look);
                            ps[round % 2 == 0 ? 2 : 3].execute();
                            String r = rows(st, look);
                            ps[0].execute();
                            String d = rows(st, look);
                            out.append(n++ > 0 ? ", " : "").append("\"r").append(round).append("c").append(i).append("\": [")
                               .append(a).append(", ").append(b).append(", ").append(r).append(", ").append(d).append("]");
                        }
                        done("pr" + i);
                    }
            } finally {
                for (PreparedStatement[] ps : pss) for (PreparedStatement p : ps) p.close();
                for (Connection c : cs) c.close();
            }
            dropSchemas(tag + "_pr", 5);
            return out.append("}").toString();
        });
        CASES.put("generated_keys_and_types", () -> {
            String tn = tag + "_gk";
            admin("DROP TABLE IF EXISTS " + tn, "CREATE TABLE " + tn + "(id bigserial primary key, t timestamptz, n numeric, b bytea, "
                    + "a int[], j jsonb, u uuid, i interval)");
            StringBuilder out = new StringBuilder("{");
            for (String params : new String[]{"prepareThreshold=-1", "prepareThreshold=5", "preferQueryMode=simple"}) {
                try (Connection c = connect("gk " + params, params)) {
                    String key = params.replace('=', '_').replace("-", "m");
                    List<String> keys = new ArrayList<>();
                    try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + tn + "(t, n, b, a, j, u, i) VALUES "
                            + "(?::timestamptz, ?, decode(?, 'hex'), ?::int[], ?::jsonb, ?::uuid, ?::interval)", Statement.RETURN_GENERATED_KEYS)) {
                        for (int k = 0; k < 7; k++) {
                            ps.setString(1, "2024-0" + (k + 1) + "-15 12:34:56.789+02");
                            ps.setBigDecimal(2, new BigDecimal("12345678901234567890.12345").add(BigDecimal.valueOf(k)));
                            ps.setString(3, "0001" + String.format("%02x", k) + "ff"); // simple mode binds no bytea
                            ps.setString(4, "{1," + k + ",3}");
                            ps.setString(5, "{\"k\": " + k + ", \"s\": \"x\"}");
                            ps.setString(6, "00000000-0000-0000-0000-00000000000" + k);
                            ps.setString(7, k + " days 02:03:04");
                            ps.executeUpdate();
                            try (ResultSet rs = ps.getGeneratedKeys()) { rs.next(); keys.add(rs.getString("id") != null ? "k" : "null"); }
                        }
                    }
                    try (PreparedStatement ps = c.prepareStatement("SELECT t, n, b, a, j, u, i, t AT TIME ZONE 'UTC' FROM " + tn
                            + " WHERE n > ? ORDER BY n LIMIT 3")) {
                        ps.setBigDecimal(1, new BigDecimal("12345678901234567892"));
                        StringBuilder r = new StringBuilder("[");
                        for (int k = 0; k < 6; k++) {
                            try (ResultSet rs = ps.executeQuery()) {
                                while (rs.next()) {
                                    if (k < 5) continue;
                                    r.append(r.length() > 1 ? ", " : "").append("[").append(q(rs.getTimestamp(1).toInstant().toString()))
                                     .append(", ").append(q(rs.getBigDecimal(2).toPlainString())).append(", ").append(q(Arrays.toString(rs.getBytes(3))))
                                     .append(", ").append(q(rs.getString(4))).append(", ").append(q(rs.getString(5)))
                                     .append(", ").append(q(rs.getString(6))).append(", ").append(q(rs.getString(7)))
                                     .append(", ").append(q(rs.getString(8))).append("]");
                                }
                            }
                        }
                        out.append(out.length() > 1 ? ", " : "").append(q(key)).append(": {\"keys\": ").append(keys.size())
                           .append(", \"rows\": ").append(r).append("]}");
                    }
                }
            }
            admin("DROP TABLE " + tn);
            return out.append("}").toString();
        });
    }

    /** What PostgreSQL's busy client backends are doing (PG_DIRECT_PORT), for a stall report. */
    static String backends() {
        String p = System.getenv("PG_DIRECT_PORT");
        if (p == null) return "";
        try (Connection c = DriverManager.getConnection("jdbc:postgresql://" + host + ":" + p + "/postgres"
                + "?user=postgres&sslmode=disable&connectTimeout=5"); Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT state, wait_event_type, wait_event, (now() - xact_start)::text, "
                     + "left(query, 80) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                     + "AND pid <> pg_backend_pid() AND state <> 'idle' ORDER BY xact_start")) {
            StringBuilder b = new StringBuilder();
            while (rs.next())
                b.append(rs.getString(1)).append(" / ").append(rs.getString(2)).append(":").append(rs.getString(3))
                        .append(" xact ").append(rs.getString(4)).append(" ").append(rs.getString(5)).append("; ");
            return b.toString();
        } catch (Exception e) {
            return e.toString();
        }
    }

    public static void main(String[] a) throws Exception {
        host = a[0]; port = Integer.parseInt(a[1]); db = a[2]; user = a[3];
        tag = System.getenv().getOrDefault("TAG", "jd");
        // --load: a stall is reported (with what PostgreSQL's backends are doing, when
        // PG_DIRECT_PORT says where PostgreSQL is) and counted, and the run goes on: a connection
        // that recovers says after how long; one stalled for 120 s ends the run. The cases stop at
        // the first stall.
        final boolean load = a.length > 4 && a[4].equals("--load");
        if (!(a.length > 4 && a[4].equals("--list"))) {
            // The JVM's first connection loads the driver's classes: seconds on a busy machine,
            // which the watchdog must not take for a stalled connection. Warm up unwatched.
            try (Connection c = DriverManager.getConnection(url("prepareThreshold=0")); Statement s = c.createStatement()) {
                s.execute("SELECT 1");
            } catch (SQLException e) {
                System.out.println("{\"warm-up connection failed\": " + q(e.toString()) + "}");
            }
        }
        final Map<String, String> stalled = new HashMap<>();
        Thread wd = new Thread(() -> {
            while (true) {
                try { Thread.sleep(500); } catch (InterruptedException e) { return; }
                long now = System.currentTimeMillis();
                for (Map.Entry<String, String[]> e : doing.entrySet()) {
                    long since = Long.parseLong(e.getValue()[1]);
                    String key = e.getValue()[0] + "@" + since;
                    if (now - since > STALL_MS && !key.equals(stalled.get(e.getKey()))) {
                        stalled.put(e.getKey(), key);
                        System.out.println("{\"stall\": " + q(e.getKey()) + ", \"doing\": " + q(e.getValue()[0])
                                + ", \"seconds\": " + (now - since) / 1000 + (load ? ", \"backends\": " + q(backends()) : "") + "}");
                        System.out.flush();
                        if (!load) Runtime.getRuntime().halt(3);
                    }
                    if (now - since > 120_000) {
                        System.out.println("{\"hung\": " + q(e.getKey()) + ", \"doing\": " + q(e.getValue()[0]) + "}");
                        System.out.flush();
                        Runtime.getRuntime().halt(3);
                    }
                }
                for (Iterator<Map.Entry<String, String>> it = stalled.entrySet().iterator(); it.hasNext(); ) {
                    Map.Entry<String, String> e = it.next();
                    String[] d = doing.get(e.getKey());
                    if (d == null || !(d[0] + "@" + d[1]).equals(e.getValue())) {
                        long since = Long.parseLong(e.getValue().substring(e.getValue().lastIndexOf('@') + 1));
                        System.out.println("{\"recovered\": " + q(e.getKey()) + ", \"after_seconds\": " + (now - since) / 1000 + "}");
                        System.out.flush();
                        it.remove();
                    }
                }
            }
        });
        wd.setDaemon(true);
        wd.start();
        if (a.length > 4 && a[4].equals("--list")) {
            System.out.println(String.join(" ", CASES.keySet()));
        } else if (a.length > 4 && a[4].equals("--load")) {
            long t0 = System.nanoTime();
            String[] finalBad = runLoad(Integer.parseInt(a[5]), Integer.parseInt(a[6]));
            System.out.printf("RESULT ok=%d bad=%d final_bad=%d seconds=%.1f%n", okOps.get(), badOps.get(), finalBad.length,
                    (System.nanoTime() - t0) / 1e9);
            synchronized (errors) { for (String e : errors) System.out.println("  " + e); }
            for (String e : finalBad) System.out.println("  " + e);
        } else {
            List<String> names = a.length > 4 ? Arrays.asList(a).subList(4, a.length) : new ArrayList<>(CASES.keySet());
            for (String name : names) {
                String out;
                try { out = CASES.get(name).call(); } catch (Exception e) { out = "{\"exception\": " + q(e.toString()) + "}"; }
                System.out.println("{\"case\": " + q(name) + ", \"out\": " + out + "}");
                System.out.flush();
            }
        }
        System.exit(0);
    }
}
