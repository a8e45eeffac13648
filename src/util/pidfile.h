/* The pid file (pidfile: in tusk.yaml), as PgBouncer's: written at start, removed at stop. */
#ifndef TUSK_UTIL_PIDFILE_H
#define TUSK_UTIL_PIDFILE_H

#include <stdbool.h>

/* Write this process's pid to path (through a temporary file and rename). Unless replace (an
 * online restart takes over from the process named in it), a file naming a live process other
 * than this one is -EEXIST and *other is that pid. 0 or a negative errno. */
__attribute__((warn_unused_result))
int pidfile_write(const char *path, bool replace, int *other);
/* Remove path if it still names this process (a takeover's successor rewrote it otherwise). */
void pidfile_remove(const char *path);

#endif
