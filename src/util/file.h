/* Reading a small file whole (auth_file, hba_file): bounded, with the option to wipe every
 * intermediate copy for files that hold secrets. Blocking: start-up and reload only. */
#ifndef TUSK_UTIL_FILE_H
#define TUSK_UTIL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* *data (malloc'd, not NUL-terminated) and *len. 0, -EFBIG when larger than max, -ENOMEM,
 * or -errno from open/read. With wipe, buffers outgrown while reading are zeroed before
 * they are freed (the caller zeroes *data when done). */
__attribute__((warn_unused_result))
int util_read_file(const char *path, size_t max, bool wipe, char **data, size_t *len);

/* Errors of a line-oriented file, each written to errout (NULL: only counted) as
 * "NAME:LINE: WHAT: message", or "NAME: WHAT: message" while line is 0. */
struct util_file_report {
	const char *name; /* the file, or what the text came from */
	const char *what; /* "hba", "userlist" */
	int line;         /* 1-based, 0 for the file as a whole */
	FILE *errout;
	int nerr;
};
__attribute__((format(printf, 2, 3)))
void util_file_report(struct util_file_report *r, const char *fmt, ...);

/* util_read_file for a line parser: a file that cannot be read (or is over max) is reported
 * through r. 0, or r->nerr. */
int util_load_file(const char *path, size_t max, bool wipe, struct util_file_report *r, char **data, size_t *len);

/* The next line of data[*pos, len) into *line and *n (without the '\n'), counting r->line;
 * false at the end. */
bool util_next_line(const char *data, size_t len, size_t *pos, struct util_file_report *r, const char **line,
		    size_t *n);

/* Space, tab, CR, VT, FF: what separates fields in auth_file and hba_file lines. */
bool util_is_blank(char c);

#endif
