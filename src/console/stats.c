/* SHOW STATS: placeholder until the stats module lands. */
#include "console/console_int.h"

void console_show_stats(struct console_session *cs)
{
	console_error(cs, "0A000", "SHOW STATS is not available yet");
}
