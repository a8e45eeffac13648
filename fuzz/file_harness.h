/* What the fuzz targets of tusk's file loaders (auth_file, hba_file, ident_file) share: their
 * check, the input as an exact-size heap copy (so ASan flags a read even one byte past it), its
 * line count, and /dev/null for the loaders' error messages (so their formatting runs too). */
#ifndef TUSK_FUZZ_FILE_HARNESS_H
#define TUSK_FUZZ_FILE_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void check(int ok)
{
	if (!ok)
		abort();
}

/* The input copied (free it), and its number of lines in *lines. */
static inline char *fuzz_file_text(const uint8_t *data, size_t size, size_t *lines)
{
	char *text = malloc(size ? size : 1);
	check(text != NULL);
	if (size)
		memcpy(text, data, size);
	*lines = 1;
	for (size_t i = 0; i < size; i++)
		*lines += text[i] == '\n';
	return text;
}

static inline FILE *fuzz_devnull(void)
{
	static FILE *devnull;
	if (!devnull)
		devnull = fopen("/dev/null", "w");
	return devnull;
}

#endif
