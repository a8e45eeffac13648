/* `tusk top`: the live terminal view of a running tusk through its admin console. */
#ifndef TUSK_TOP_TOP_H
#define TUSK_TOP_TOP_H

/* argv[0] is "top". Returns the process exit code. */
int top_main(int argc, char **argv);

#endif
