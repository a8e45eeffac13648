// kv calls through tusk's kv database as an application makes them with pgjdbc
// (tests/integration/test_kv_wire.py): pgjdbc sends SET extra_float_digits and SET
// application_name after the startup, and from the prepareThreshold-th execution of a statement
// on asks for bigint, int and boolean results in binary. Prints one line per call:
// "<call> <result>". Arguments: host port user rounds.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

public class KvCalls {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/kv?user=" + a[2] + "&prepareThreshold=2&sslmode=disable";
        int rounds = Integer.parseInt(a[3]);
        try (Connection c = DriverManager.getConnection(url)) {
            for (int i = 0; i < rounds; i++) {
                try (PreparedStatement p = c.prepareStatement("SELECT kv.put(?, ?, ?::jsonb)")) {
                    p.setString(1, "default");
                    p.setString(2, "jdbc-" + i);
                    p.setString(3, "{\"i\": " + i + "}");
                    try (ResultSet r = p.executeQuery()) {
                        r.next();
                        System.out.println("put " + (r.getLong(1) > 0));
                    }
                }
                try (PreparedStatement p = c.prepareStatement("SELECT kv.get(?, ?)")) {
                    p.setString(1, "default");
                    p.setString(2, "jdbc-" + i);
                    try (ResultSet r = p.executeQuery()) {
                        r.next();
                        System.out.println("get " + r.getString(1));
                    }
                }
                try (PreparedStatement p = c.prepareStatement("SELECT kv.incr(?, ?, ?)")) {
                    p.setString(1, "default");
                    p.setString(2, "jdbc-n");
                    p.setLong(3, 2);
                    try (ResultSet r = p.executeQuery()) {
                        r.next();
                        System.out.println("incr " + r.getLong(1));
                    }
                }
                try (PreparedStatement p = c.prepareStatement("SELECT kv.rename(?, ?, ?)")) {
                    p.setString(1, "default");
                    p.setString(2, "jdbc-" + i);
                    p.setString(3, "jdbc-" + i);
                    try (ResultSet r = p.executeQuery()) {
                        r.next();
                        System.out.println("rename " + r.getInt(1));
                    }
                }
                try (PreparedStatement p = c.prepareStatement("SELECT kv.put_if_value(?, ?, ?::jsonb, ?::jsonb)")) {
                    p.setString(1, "default");
                    p.setString(2, "jdbc-" + i);
                    p.setString(3, "{\"i\": -1}");
                    p.setString(4, "{\"i\": 0}");
                    try (ResultSet r = p.executeQuery()) {
                        r.next();
                        System.out.println("put_if_value " + r.getBoolean(1));
                    }
                }
                try (PreparedStatement p = c.prepareStatement("SELECT * FROM kv.get_many(?, ?)")) {
                    p.setString(1, "default");
                    p.setArray(2, c.createArrayOf("text", new String[] { "jdbc-" + i, "jdbc-none" }));
                    try (ResultSet r = p.executeQuery()) {
                        while (r.next())
                            System.out.println("get_many " + r.getString("key") + " " + r.getString("value"));
                    }
                }
            }
        }
    }
}
