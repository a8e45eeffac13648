// A result set read with a fetch size inside a transaction (pgjdbc binds a named portal and
// executes it a few rows at a time) while other statements run on the same connection between
// its fetches: each of those binds a portal of its own (the unnamed one, or another named one
// with a fetch size too), and the first portal must go on where it stood. Prints one line per
// row read. Arguments: host port db user prepareThreshold ns key... (keys of one shard;
// prepareThreshold 0: every statement the unnamed one, parsed again at each execution).
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Arrays;

public class KvNested {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2] + "?user=" + a[3] + "&prepareThreshold=" + a[4]
                     + "&sslmode=disable";
        String ns = a[5];
        String[] keys = Arrays.copyOfRange(a, 6, a.length);
        try (Connection c = DriverManager.getConnection(url)) {
            c.setAutoCommit(false);
            try (PreparedStatement outer = c.prepareStatement("SELECT * FROM kv.get_many(?, ?)");
                 PreparedStatement inner = c.prepareStatement("SELECT kv.get(?, ?)");
                 PreparedStatement inner2 = c.prepareStatement("SELECT * FROM kv.get_many(?, ?)")) {
                outer.setFetchSize(2);
                outer.setString(1, ns);
                outer.setArray(2, c.createArrayOf("text", keys));
                inner2.setFetchSize(1);
                try (ResultSet r = outer.executeQuery()) {
                    while (r.next()) {
                        inner.setString(1, ns);
                        inner.setString(2, r.getString(1));
                        String again;
                        try (ResultSet i = inner.executeQuery()) {
                            i.next();
                            again = i.getString(1);
                        }
                        inner2.setString(1, ns);
                        inner2.setArray(2, c.createArrayOf("text", keys));
                        int n = 0;
                        try (ResultSet i = inner2.executeQuery()) {
                            while (i.next() && n < 2)
                                n++;
                        }
                        System.out.println(r.getString(1) + " " + r.getString(2) + " " + again + " " + n);
                    }
                }
            }
            c.commit();
        }
    }
}
