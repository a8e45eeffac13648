// pgjdbc's Connection.isValid() (HikariCP's check of a connection when no test query is set):
// it prepares the empty statement and executes it, and takes any error for a dead connection.
// Prints isValid outside a transaction, inside one, and inside one a failed statement aborted.
// Arguments: host port db user.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.Statement;

public class KvValid {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2] + "?user=" + a[3] + "&sslmode=disable";
        try (Connection c = DriverManager.getConnection(url)) {
            System.out.println("idle " + c.isValid(5));
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("SELECT 1");
                System.out.println("in a transaction " + c.isValid(5));
                try {
                    s.execute("SELECT kv.get(NULL, NULL)");
                } catch (java.sql.SQLException e) {
                    System.out.println("failed " + e.getSQLState());
                }
                System.out.println("in a failed transaction " + c.isValid(5));
            }
            c.rollback();
            System.out.println("after " + c.isValid(5));
        }
    }
}
