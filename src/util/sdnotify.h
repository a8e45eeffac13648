/* systemd's notification protocol (sd_notify(3)), written directly: one datagram of
 * "KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET ('@' = abstract). */
#ifndef TUSK_UTIL_SDNOTIFY_H
#define TUSK_UTIL_SDNOTIFY_H

/* Send state ("READY=1", "RELOADING=1\nMONOTONIC_USEC=...", "STOPPING=1", "STATUS=...").
 * 0 when sent or when not run by systemd ($NOTIFY_SOCKET unset); else a negative errno. */
int sdnotify(const char *state);
/* "RELOADING=1" with the MONOTONIC_USEC systemd 253+ wants for Type=notify-reload. */
int sdnotify_reloading(void);

#endif
