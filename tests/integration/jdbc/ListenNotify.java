// LISTEN/NOTIFY as pgjdbc does it (tests/integration/test_listen_notify.py): LISTEN through the
// extended protocol (a Statement: unnamed; a PreparedStatement past prepareThreshold: named),
// each connection's own NOTIFY told from the others' by comparing the notification's pid with
// getBackendPID() (NOTIFY, and pg_notify(?, ?) with parameters). Prints one line per
// notification received: "<conn> <payload> own|other".
// Arguments: host port database user.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;

public class ListenNotify {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2] + "?user=" + a[3]
                + "&prepareThreshold=2&sslmode=disable";
        int n = 3;
        Connection[] cs = new Connection[n];
        for (int i = 0; i < n; i++) {
            cs[i] = DriverManager.getConnection(url);
            cs[i].setAutoCommit(true);
        }
        for (int i = 0; i < n; i++) {
            try (Statement st = cs[i].createStatement()) {
                st.execute("LISTEN jdbc_a");
            }
            try (PreparedStatement ps = cs[i].prepareStatement("LISTEN jdbc_b")) {
                for (int k = 0; k < 4; k++) // named (S_n) from the second run on
                    ps.execute();
            }
            cs[i].setAutoCommit(false); // in a transaction: applies at commit
            try (Statement st = cs[i].createStatement()) {
                st.execute("SELECT 1"); // pgjdbc sends its BEGIN with this one
            }
            try (PreparedStatement ps = cs[i].prepareStatement("UNLISTEN jdbc_a")) {
                ps.execute();
            }
            cs[i].commit();
            cs[i].setAutoCommit(true);
        }
        for (int i = 0; i < n; i++) {
            try (Statement st = cs[i].createStatement()) {
                st.execute("NOTIFY jdbc_a, 'a" + i + "'"); // nobody listens any more
                st.execute("NOTIFY jdbc_b, 'b" + i + "'");
            }
            try (PreparedStatement ps = cs[i].prepareStatement("SELECT pg_notify(?, ?)")) {
                for (int k = 0; k < 3; k++) { // parameters; named from the second run on
                    ps.setString(1, "jdbc_b");
                    ps.setString(2, "c" + i + "-" + k);
                    ps.execute();
                }
            }
        }
        List<String> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            PGConnection pg = cs[i].unwrap(PGConnection.class);
            int mine = pg.getBackendPID();
            long deadline = System.currentTimeMillis() + 10000;
            int got = 0;
            while (got < 4 * n && System.currentTimeMillis() < deadline) {
                PGNotification[] ns = pg.getNotifications(500);
                if (ns == null)
                    continue;
                for (PGNotification x : ns) {
                    out.add(i + " " + x.getName() + " " + x.getParameter() + " " + (x.getPID() == mine ? "own" : "other"));
                    got++;
                }
            }
        }
        Collections.sort(out);
        for (String s : out)
            System.out.println(s);
        for (Connection c : cs)
            c.close();
    }
}
