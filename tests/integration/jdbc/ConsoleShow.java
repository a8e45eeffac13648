// The admin console as a Java monitor polls it with pgjdbc (tests/integration/test_console.py):
// one prepared SHOW LISTS run again and again; from the prepareThreshold-th execution on,
// pgjdbc asks for its int8 column in binary. Prints "<round> <list> <items>" for each row,
// items read with getLong. Arguments: host port user password rounds.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

public class ConsoleShow {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/tusk?user=" + a[2] + "&password=" + a[3]
                + "&prepareThreshold=2&sslmode=disable";
        int rounds = Integer.parseInt(a[4]);
        try (Connection c = DriverManager.getConnection(url);
             PreparedStatement p = c.prepareStatement("SHOW LISTS")) {
            for (int i = 0; i < rounds; i++) {
                try (ResultSet r = p.executeQuery()) {
                    while (r.next())
                        System.out.println(i + " " + r.getString("list") + " " + r.getLong("items"));
                }
            }
        }
    }
}
