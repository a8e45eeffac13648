/* Reading a small file whole (auth_file, hba_file): bounded, with the option to wipe every
 * intermediate copy for files that hold secrets. Blocking: start-up and reload only. */
#ifndef TUSK_UTIL_FILE_H
#define TUSK_UTIL_FILE_H

#include <stdbool.h>
#include <stddef.h>

/* *data (malloc'd, not NUL-terminated) and *len. 0, -EFBIG when larger than max, -ENOMEM,
 * or -errno from open/read. With wipe, buffers outgrown while reading are zeroed before
 * they are freed (the caller zeroes *data when done). */
__attribute__((warn_unused_result))
int util_read_file(const char *path, size_t max, bool wipe, char **data, size_t *len);

#endif
