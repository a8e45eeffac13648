/* The operator commands: tusk kv init | push | shard (docs/kv.md, "Set-up"). */
#ifndef TUSK_KV_ADMIN_H
#define TUSK_KV_ADMIN_H

/* argv[0] is "kv". Exit status: 0 done, 1 failed (reasons on stderr), 2 usage. */
int kv_admin_main(int argc, char **argv);

#endif
