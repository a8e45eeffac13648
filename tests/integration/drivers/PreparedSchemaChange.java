import java.sql.*;

/** pgjdbc server-prepared statements across schema changes (test_prepared_schema_change.py).
 *  usage: java -cp postgresql.jar PreparedSchemaChange.java PORT DB USER THRESHOLD[,THRESHOLD...] TABLE_PREFIX
 *  Prints one line per execution: the row as name=value pairs, or the SQLSTATE of an error. */
public class PreparedSchemaChange {
    public static void main(String[] args) throws Exception {
        for (String thr : args[3].split(",")) {
            String[] a = args.clone();
            a[3] = thr;
            System.out.println("prepareThreshold " + thr);
            one(a);
        }
    }

    static void one(String[] a) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/" + a[1] + "?user=" + a[2]
            + "&sslmode=disable&prepareThreshold=" + a[3];
        String[][] cases = {
            {"id int, a int", "1, 10", "add column c text default 'new'"},
            {"id int, a int", "1, 10", "alter column a type bigint"},
            {"id int, a int", "1, 10", "alter column a type text"},
            {"id int, a int, b text", "1, 10, 'bee'", "drop column a"},
            {"id int, a bigint", "1, 10", "alter column a type int"},
        };
        int thr = Integer.parseInt(a[3]);
        try (Connection adm = DriverManager.getConnection(url.replaceAll("prepareThreshold=[0-9]+", "prepareThreshold=0"));
             Connection c = DriverManager.getConnection(url)) {
            Statement as = adm.createStatement();
            for (int n = 0; n < cases.length; n++) {
                String t = a[4] + n;
                as.execute("drop table if exists " + t + "; create table " + t + " (" + cases[n][0] + "); insert into "
                    + t + " values (" + cases[n][1] + ")");
                try (PreparedStatement ps = c.prepareStatement("select * from " + t + " where id = ?")) {
                    for (int k = 0; k < thr + 1; k++)
                        System.out.println(n + " before: " + run(ps));
                    as.execute("alter table " + t + " " + cases[n][2]);
                    System.out.println(n + " after 1: " + run(ps));
                    System.out.println(n + " after 2: " + run(ps));
                }
                as.execute("drop table " + t);
            }
        }
    }

    static String run(PreparedStatement ps) {
        try {
            ps.setInt(1, 1);
            StringBuilder sb = new StringBuilder();
            try (ResultSet rs = ps.executeQuery()) {
                ResultSetMetaData md = rs.getMetaData();
                while (rs.next())
                    for (int i = 1; i <= md.getColumnCount(); i++)
                        sb.append(md.getColumnName(i)).append('=').append(rs.getString(i)).append(' ');
            }
            return sb.toString();
        } catch (SQLException e) {
            return "error " + e.getSQLState();
        } catch (RuntimeException e) { /* a row decoded with the wrong layout */
            return "exception " + e.getClass().getSimpleName();
        }
    }
}
