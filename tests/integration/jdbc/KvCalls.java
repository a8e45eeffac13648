// kv calls through tusk's kv database as an application makes them with pgjdbc
// (tests/integration/test_kv_wire.py): pgjdbc sends SET extra_float_digits and SET
// application_name after the startup, and from the prepareThreshold-th execution of a statement
// on asks for bigint, int and boolean results in binary. Prints one line per row:
// "<call> <its columns, read with getLong, getString, getInt or getBoolean>" (KvCalls.call).
// Arguments: host port user rounds.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

public class KvCalls {
    // Runs sql with args (String, Long, or String[] as a text[]) and prints each row as name and
    // its columns read as kinds says: 'l' getLong > 0, 'n' getLong, 's' getString, 'i' getInt,
    // 'b' getBoolean.
    static void call(Connection c, String name, String kinds, String sql, Object... args) throws Exception {
        try (PreparedStatement p = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                if (args[i] instanceof Long)
                    p.setLong(i + 1, (Long) args[i]);
                else if (args[i] instanceof String[])
                    p.setArray(i + 1, c.createArrayOf("text", (String[]) args[i]));
                else
                    p.setString(i + 1, (String) args[i]);
            }
            try (ResultSet r = p.executeQuery()) {
                while (r.next()) {
                    StringBuilder line = new StringBuilder(name);
                    for (int k = 0; k < kinds.length(); k++) {
                        char kind = kinds.charAt(k);
                        line.append(' ').append(kind == 'l' ? String.valueOf(r.getLong(k + 1) > 0)
                                                : kind == 'n' ? String.valueOf(r.getLong(k + 1))
                                                : kind == 'i' ? String.valueOf(r.getInt(k + 1))
                                                : kind == 'b' ? String.valueOf(r.getBoolean(k + 1))
                                                : r.getString(k + 1));
                    }
                    System.out.println(line);
                }
            }
        }
    }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/kv?user=" + a[2] + "&prepareThreshold=2&sslmode=disable";
        int rounds = Integer.parseInt(a[3]);
        try (Connection c = DriverManager.getConnection(url)) {
            for (int i = 0; i < rounds; i++) {
                String k = "jdbc-" + i;
                call(c, "put", "l", "SELECT kv.put(?, ?, ?::jsonb)", "default", k, "{\"i\": " + i + "}");
                call(c, "get", "s", "SELECT kv.get(?, ?)", "default", k);
                call(c, "incr", "n", "SELECT kv.incr(?, ?, ?)", "default", "jdbc-n", 2L);
                call(c, "rename", "i", "SELECT kv.rename(?, ?, ?)", "default", k, k);
                call(c, "put_if_value", "b", "SELECT kv.put_if_value(?, ?, ?::jsonb, ?::jsonb)", "default", k,
                     "{\"i\": -1}", "{\"i\": 0}");
                call(c, "get_many", "ss", "SELECT * FROM kv.get_many(?, ?)", "default", new String[] { k, "jdbc-none" });
            }
        }
    }
}
