/* Whole-file reads (see file.h). */
#include "util/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int util_read_file(const char *path, size_t max, bool wipe, char **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	*data = NULL;
	*len = 0;
	if (!f)
		return -errno;
	for (;;) {
		if (n == cap) {
			if (cap >= max) {
				rc = -EFBIG;
				break;
			}
			size_t ncap = cap ? cap * 2 : 4096;
			char *nb = malloc(ncap);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			if (buf) {
				memcpy(nb, buf, n);
				if (wipe)
					explicit_bzero(buf, cap);
				free(buf);
			}
			buf = nb;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (rc == 0 && ferror(f))
		rc = -(errno ? errno : EIO);
	fclose(f);
	if (rc < 0) {
		if (buf && wipe)
			explicit_bzero(buf, cap);
		free(buf);
		return rc;
	}
	*data = buf;
	*len = n;
	return 0;
}
