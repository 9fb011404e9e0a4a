/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg-nbd's command line: qemu-nbd's options for one image, and
 * qemu-storage-daemon's --blockdev / --nbd-server / --export for many.
 */
#ifndef VIMG_NBD_SETUP_H
#define VIMG_NBD_SETUP_H

#include <stdbool.h>

#include <jansson.h>

#include "server.h"

struct setup {
    /* qemu-nbd mode */
    const char *file, *format, *export_name, *description;
    const char **bitmaps; /* NULL-terminated */
    size_t nbitmaps;
    bool read_only, persistent, alloc_depth, image_opts;
    long shared; /* -e; -1 = not given */
    /* listening */
    const char *socket_path, *bind, *port;
    /* both modes */
    bool fork, exit_now;
    const char *pid_file;
    const char *qmp_path; /* --qmp SOCKET */
    const char *tls_cert, *tls_key, *tls_ca, *tls_psk;
    long handshake_timeout, max_connections, workers; /* -1 = default */
    /* qemu-storage-daemon mode, parsed option trees (owned) */
    json_t *blockdevs, *exports, *nbd_server;
    struct node **nodes; /* the opened --blockdev nodes, one ref each */
    size_t nnodes;
};

/* Parse ARGV into ST; -1 after printing an error. */
int setup_parse(struct setup *st, int argc, char **argv);
/* Open the images and add the exports to SRV; set its limits and TLS. */
int setup_server(struct setup *st, struct server *srv);
/* Listen where ST says; returns the number of sockets in FDS or -1. */
int setup_listen(struct setup *st, int *fds, int max);
/* Release what setup_parse and setup_server kept; -1 if closing a node
 * failed. */
int setup_free(struct setup *st);

#endif
