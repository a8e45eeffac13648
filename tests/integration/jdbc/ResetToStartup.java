// RESET ALL, DISCARD ALL and RESET client_encoding as an application sends them through pgjdbc
// (tests/integration/test_release_state.py): PostgreSQL direct goes back to the values pgjdbc
// gave at startup (client_encoding UTF8, DateStyle ISO), and pgjdbc closes its connection when
// the server reports anything else ("The server's client_encoding parameter was changed to
// LATIN1"). Prints one line per step: "<step> <client_encoding> <a date read back>".
// Arguments: host port database user.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;

public class ResetToStartup {
    static String state(Connection c) throws Exception {
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT current_setting('client_encoding'), DATE '2026-01-02'")) {
            rs.next();
            return rs.getString(1) + " " + rs.getDate(2);
        }
    }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2] + "?user=" + a[3]
                + "&prepareThreshold=2&sslmode=disable";
        try (Connection c = DriverManager.getConnection(url)) {
            c.setAutoCommit(true);
            for (String sql : new String[] { "RESET ALL", "DISCARD ALL", "RESET client_encoding",
                                             "SET DateStyle = 'German'; RESET DateStyle" }) {
                try (Statement st = c.createStatement()) {
                    st.execute(sql);
                }
                System.out.println(sql + " " + state(c));
            }
            for (int i = 0; i < 4; i++) { // named (S_n) from the second run on
                try (PreparedStatement ps = c.prepareStatement("RESET ALL")) {
                    ps.execute();
                }
                System.out.println("prepared RESET ALL " + i + " " + state(c));
            }
            c.setAutoCommit(false); // in a transaction: the RESET's values hold until the commit
            try (Statement st = c.createStatement()) {
                st.execute("RESET ALL");
            }
            System.out.println("RESET ALL in a transaction " + state(c));
            c.commit();
            System.out.println("after the commit " + state(c));
        }
    }
}
