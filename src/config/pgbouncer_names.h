/* PgBouncer 1.18's settings and what tusk calls them: for "unknown key" messages, the
 * importer (tusk import-pgbouncer) and docs/migrating-from-pgbouncer.md. */
#ifndef TUSK_CONFIG_PGBOUNCER_NAMES_H
#define TUSK_CONFIG_PGBOUNCER_NAMES_H

enum pgb_fate {
	PGB_SAME,       /* same key, same meaning (durations take a unit) */
	PGB_RENAMED,    /* tusk: where it goes in tusk.yaml */
	PGB_NOT_NEEDED, /* note: why tusk has no such key */
	PGB_MISSING,    /* note: not supported (yet) */
};

struct pgb_name {
	const char *name; /* PgBouncer's key ([pgbouncer] section, or a [databases] option) */
	enum pgb_fate fate;
	const char *tusk; /* tusk's key, or NULL */
	const char *note; /* NULL, or why */
};

/* The entry for a PgBouncer key, or NULL. */
const struct pgb_name *pgb_name_find(const char *name);

#endif
