/* tusk import-pgbouncer pgbouncer.ini [userlist.txt]: see docs/migrating-from-pgbouncer.md. */
#ifndef TUSK_CONFIG_IMPORT_PGBOUNCER_H
#define TUSK_CONFIG_IMPORT_PGBOUNCER_H

/* argv[0] is "import-pgbouncer". Exit status: 0 written, 1 failed, 2 usage. */
int import_pgbouncer_main(int argc, char **argv);

#endif
