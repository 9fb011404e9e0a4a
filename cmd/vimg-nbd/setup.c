/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Command line to server: option parsing for both modes, opening the
 * images (in qemu-storage-daemon mode a --blockdev may name another as
 * its file or backing child), creating the exports, and choosing where
 * to listen.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "setup.h"

enum {
    OPT_IMAGE_OPTS = 256, OPT_FORK, OPT_PID_FILE, OPT_TLS_CERT, OPT_TLS_KEY,
    OPT_TLS_CA, OPT_TLS_PSK, OPT_HANDSHAKE_TIMEOUT, OPT_MAX_CONNECTIONS,
    OPT_BLOCKDEV, OPT_NBD_SERVER, OPT_EXPORT, OPT_WORKERS, OPT_QMP,
};

static const char short_opts[] = ":hVrx:D:f:k:b:p:e:tB:A";
static const struct option long_opts[] = {
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { "read-only", no_argument, NULL, 'r' },
    { "export-name", required_argument, NULL, 'x' },
    { "description", required_argument, NULL, 'D' },
    { "format", required_argument, NULL, 'f' },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "socket", required_argument, NULL, 'k' },
    { "bind", required_argument, NULL, 'b' },
    { "port", required_argument, NULL, 'p' },
    { "shared", required_argument, NULL, 'e' },
    { "persistent", no_argument, NULL, 't' },
    { "bitmap", required_argument, NULL, 'B' },
    { "allocation-depth", no_argument, NULL, 'A' },
    { "fork", no_argument, NULL, OPT_FORK },
    { "pid-file", required_argument, NULL, OPT_PID_FILE },
    { "tls-cert", required_argument, NULL, OPT_TLS_CERT },
    { "tls-key", required_argument, NULL, OPT_TLS_KEY },
    { "tls-ca", required_argument, NULL, OPT_TLS_CA },
    { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
    { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
    { "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
    { "workers", required_argument, NULL, OPT_WORKERS },
    { "blockdev", required_argument, NULL, OPT_BLOCKDEV },
    { "nbd-server", required_argument, NULL, OPT_NBD_SERVER },
    { "export", required_argument, NULL, OPT_EXPORT },
    { "qmp", required_argument, NULL, OPT_QMP },
    { NULL, 0, NULL, 0 },
};

static void
usage(void)
{
    printf(
        "Usage: vimg-nbd [OPTIONS] FILE\n"
        "       vimg-nbd --blockdev OPTS... --nbd-server OPTS --export OPTS...\n"
        "Serve a disk image over NBD (qemu-nbd's options).\n"
        "\n"
        "  -r, --read-only         export read-only\n"
        "  -x, --export-name=NAME  export name (default: \"\")\n"
        "  -D, --description=TEXT  export description\n"
        "  -f, --format=FMT        image format (raw, qcow2)\n"
        "      --image-opts        FILE is an option string "
        "(driver=qcow2,file.filename=...)\n"
        "  -k, --socket=PATH       listen on a unix socket\n"
        "  -b, --bind=ADDR         TCP address (default 0.0.0.0)\n"
        "  -p, --port=PORT         TCP port (default 10809)\n"
        "  -e, --shared=N          clients served at once (default 1, 0 = no "
        "limit)\n"
        "  -t, --persistent        keep serving after the last client\n"
        "  -B, --bitmap=NAME       offer qemu:dirty-bitmap:NAME "
        "(repeatable)\n"
        "  -A, --allocation-depth  offer qemu:allocation-depth\n"
        "      --fork              go to the background once listening\n"
        "      --pid-file=FILE     write the server's pid to FILE\n"
        "      --tls-cert=FILE --tls-key=FILE [--tls-ca=FILE]\n"
        "                          require TLS with an x509 certificate (and "
        "client\n"
        "                          certificates signed by the CA)\n"
        "      --tls-psk=FILE      require TLS with pre-shared keys "
        "(username:hexkey)\n"
        "      --handshake-timeout=S  drop clients still negotiating after S "
        "seconds\n"
        "                          (default 10, 0 = never)\n"
        "      --max-connections=N at most N clients (default 100)\n"
        "      --workers=N         requests served at once per connection "
        "(default 4)\n"
        "      --blockdev=OPTS     a block node (qemu-storage-daemon syntax)\n"
        "      --nbd-server=OPTS   addr.type=unix,addr.path=P | "
        "addr.type=inet,addr.host=H,addr.port=N\n"
        "      --export=OPTS       type=nbd,id=ID,node-name=N[,name=NAME]"
        "[,writable=on][,bitmap=B]\n"
        "      --qmp=SOCKET        a QMP management socket (mode 0600)\n"
        "  -h, --help              this help\n"
        "  -V, --version           version\n");
}

static int
parse_long(const char *what, const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        server_log("Invalid %s '%s'", what, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* qemu-storage-daemon takes each of these as key=value,... or as JSON. */
static json_t *
parse_tree(const char *str)
{
    return str[0] == '{' ? opts_parse_json(str) : opts_parse_dotted(str, NULL);
}

static int
add_tree(json_t **arr, const char *what, const char *str)
{
    json_t *o = parse_tree(str);

    if (!o) {
        server_log("%s: %s", what, vimg_get_error());
        return -1;
    }
    if (!*arr)
        *arr = json_array();
    json_array_append_new(*arr, o);
    return 0;
}

static int
parse_one(struct setup *st, int c, const char *arg)
{
    switch (c) {
    case 'h': usage(); st->exit_now = true; return 0;
    case 'V':
        printf("vimg-nbd %s\n", VIMG_VERSION);
        st->exit_now = true;
        return 0;
    case 'r': st->read_only = true; return 0;
    case 'x': st->export_name = arg; return 0;
    case 'D': st->description = arg; return 0;
    case 'f': st->format = arg; return 0;
    case OPT_IMAGE_OPTS: st->image_opts = true; return 0;
    case 'k': st->socket_path = arg; return 0;
    case 'b': st->bind = arg; return 0;
    case 'p': st->port = arg; return 0;
    case 'e': return parse_long("shared count", arg, 0, 1000000, &st->shared);
    case 't': st->persistent = true; return 0;
    case 'A': st->alloc_depth = true; return 0;
    case 'B': {
        const char **v = realloc(st->bitmaps, (st->nbitmaps + 2) * sizeof *v);

        if (!v)
            return -1;
        /* Newest first: qemu-nbd prepends each -B, and so offers (and
         * numbers) the contexts in reverse order. */
        st->bitmaps = v;
        memmove(v + 1, v, st->nbitmaps * sizeof *v);
        v[0] = arg;
        v[++st->nbitmaps] = NULL;
        return 0;
    }
    case OPT_FORK: st->fork = true; return 0;
    case OPT_PID_FILE: st->pid_file = arg; return 0;
    case OPT_QMP: st->qmp_path = arg; return 0;
    case OPT_TLS_CERT: st->tls_cert = arg; return 0;
    case OPT_TLS_KEY: st->tls_key = arg; return 0;
    case OPT_TLS_CA: st->tls_ca = arg; return 0;
    case OPT_TLS_PSK: st->tls_psk = arg; return 0;
    case OPT_HANDSHAKE_TIMEOUT:
        return parse_long("handshake timeout", arg, 0, 86400,
                          &st->handshake_timeout);
    case OPT_MAX_CONNECTIONS:
        return parse_long("connection limit", arg, 1, 100000,
                          &st->max_connections);
    case OPT_WORKERS:
        return parse_long("worker count", arg, 1, 64, &st->workers);
    case OPT_BLOCKDEV: return add_tree(&st->blockdevs, "--blockdev", arg);
    case OPT_EXPORT: return add_tree(&st->exports, "--export", arg);
    case OPT_NBD_SERVER:
        if (st->nbd_server) {
            server_log("--nbd-server given twice");
            return -1;
        }
        st->nbd_server = parse_tree(arg);
        if (!st->nbd_server) {
            server_log("--nbd-server: %s", vimg_get_error());
            return -1;
        }
        return 0;
    default:
        return -1; /* getopt's message was made one line above */
    }
}

/* --nbd-server keys we act on; anything else (tls-creds above all) must
 * fail rather than be ignored. */
static int
check_nbd_server(json_t *ns)
{
    static const char *const top[] = { "addr", "max-connections", NULL };
    static const char *const addr[] = { "type", "path", "host", "port",
                                        NULL };
    json_t *a = json_object_get(ns, "addr");

    if (!ns)
        return 0;
    if (opts_check_keys(ns, top, "--nbd-server") == -1 ||
        (json_is_object(a) &&
         opts_check_keys(a, addr, "--nbd-server addr") == -1)) {
        server_log("%s", vimg_get_error());
        return -1;
    }
    return 0;
}

int
setup_parse(struct setup *st, int argc, char **argv)
{
    int c;

    st->shared = st->handshake_timeout = st->max_connections = -1;
    st->workers = -1;
    opterr = 0; /* our own one-line messages */
    while ((c = getopt_long(argc, argv, short_opts, long_opts, NULL)) != -1) {
        if (c == '?') {
            if (optopt)
                server_log("invalid option -- '%c' (see --help)", optopt);
            else
                server_log("unrecognized option '%s' (see --help)",
                           argv[optind - 1]);
            return -1;
        }
        if (c == ':') {
            server_log("option '%s' needs an argument", argv[optind - 1]);
            return -1;
        }
        if (parse_one(st, c, optarg) == -1)
            return -1;
    }
    if (st->port) {
        long port;

        if (parse_long("port", st->port, 1, 65535, &port) == -1)
            return -1;
    }
    if (st->exit_now)
        return 0;
    if (st->exports || st->blockdevs || st->nbd_server ||
        (st->qmp_path && optind == argc)) {
        if (optind < argc) {
            server_log("unexpected argument '%s' with --export", argv[optind]);
            return -1;
        }
        return check_nbd_server(st->nbd_server);
    }
    if (optind != argc - 1) {
        server_log(optind >= argc
                       ? "Expected one argument (the image; see --help)"
                       : "Expected only one argument (see --help)");
        return -1;
    }
    st->file = argv[optind];
    if (st->image_opts && st->format) {
        server_log("--image-opts and --format are mutually exclusive");
        return -1;
    }
    if (st->socket_path && (st->bind || st->port)) {
        server_log("--socket cannot be used with --bind or --port");
        return -1;
    }
    return 0;
}

int
setup_free(struct setup *st)
{
    int r = 0;

    for (size_t i = 0; i < st->nnodes; i++)
        if (node_unref(st->nodes[i]) == -1) {
            server_log("%s", vimg_get_error());
            r = -1;
        }
    free(st->nodes);
    free(st->bitmaps);
    json_decref(st->blockdevs);
    json_decref(st->exports);
    json_decref(st->nbd_server);
    return r;
}
