/* libFuzzer target for the admin console's command parser. Besides crashes, it checks what
 * console_parse promises: on success a known kind and a NUL-terminated argument shorter than
 * CONFIG_NAME_MAX, on failure -EINVAL and a message. The input is an exact-size heap copy
 * without a NUL, so ASan flags a read even one byte past it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "console/console_int.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size ? size : 1);
	struct console_cmd cmd;
	char err[200];

	if (!text)
		return 0;
	memcpy(text, data, size);
	err[0] = '\0';
	int rc = console_parse(text, size, &cmd, err, sizeof err);
	if (rc == 0) {
		check(cmd.kind >= CONSOLE_CMD_EMPTY && cmd.kind <= CONSOLE_CMD_LAST);
		check(memchr(cmd.arg, '\0', sizeof cmd.arg) != NULL);
		check(console_columns_of(cmd.kind).n >= 0);
	} else {
		check(rc == -EINVAL && err[0] != '\0');
	}
	free(text);
	return 0;
}
