/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg bitmap (--add [-g GRANULARITY] [--disable] | --remove | --clear |
 *              --enable | --disable | --merge SOURCE [-b SOURCE_FILE
 *              [-F FMT]])... [-f FMT | --image-opts] FILE BITMAP
 *
 * qemu-img 7.2's bitmap command.  The actions are collected into one
 * list handed to the format driver's bitmap_op callback, which applies
 * them in order, all or nothing (qemu-img applies them one by one).
 * Messages and their order follow qemu-img.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "node.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg bitmap (--add [-g GRANULARITY] [--disable] | --remove |\n"
    "                    --clear | --enable | --disable |\n"
    "                    --merge SOURCE [-b SOURCE_FILE [-F FMT]])...\n"
    "                   [-f FMT | --image-opts] FILE BITMAP\n"
    "\n"
    "  --add             create BITMAP (enabled unless --disable)\n"
    "  -g GRANULARITY    bytes per bit of a new bitmap (default: the\n"
    "                    cluster size, within 4 KiB .. 64 KiB)\n"
    "  --remove          delete BITMAP\n"
    "  --clear           mark every bit of BITMAP clean\n"
    "  --enable          make BITMAP record writes\n"
    "  --disable         stop BITMAP recording writes\n"
    "  --merge SOURCE    OR bitmap SOURCE into BITMAP\n"
    "  -b SOURCE_FILE    image holding SOURCE (default: FILE)\n"
    "  -F FMT            format of SOURCE_FILE\n"
    "  -f FMT            format of FILE (probed if absent)\n"
    "  --image-opts      FILE is an option string (driver=qcow2,...)\n"
    "\n"
    "Actions apply in order; if one fails, the image is left unchanged.\n";

struct opts {
    struct bitmap_action *acts;
    size_t n;
    bool add, merge;
    uint64_t granularity;
    const char *src_file, *src_fmt, *fmt;
    bool image_opts;
};

static int
push(struct opts *o, enum bitmap_op_kind op, const char *src_name)
{
    struct bitmap_action *a = realloc(o->acts, (o->n + 1) * sizeof *a);

    if (!a) {
        cmd_error("%s", strerror(errno));
        return -1;
    }
    o->acts = a;
    memset(&a[o->n], 0, sizeof *a);
    a[o->n].op = op;
    a[o->n].src_name = src_name;
    o->n++;
    return 0;
}

/* Parse the command line into O; 0 ok, -1 error printed, 1 --help. */
static int
parse(int argc, char **argv, struct opts *o)
{
    enum { OPT_ADD = 256, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE,
           OPT_MERGE, OPT_IMAGE_OPTS };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "add", no_argument, NULL, OPT_ADD },
        { "remove", no_argument, NULL, OPT_REMOVE },
        { "clear", no_argument, NULL, OPT_CLEAR },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        { "merge", required_argument, NULL, OPT_MERGE },
        { "granularity", required_argument, NULL, 'g' },
        { "source-file", required_argument, NULL, 'b' },
        { "source-format", required_argument, NULL, 'F' },
        { "format", required_argument, NULL, 'f' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { NULL, 0, NULL, 0 } };
    int c, r = 0;

    while ((c = getopt_long(argc, argv, "+hg:b:F:f:", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'h': fputs(usage_text, stdout); return 1;
        case OPT_ADD:
            o->add = true;
            r = push(o, BITMAP_OP_ADD, NULL);
            break;
        case OPT_REMOVE: r = push(o, BITMAP_OP_REMOVE, NULL); break;
        case OPT_CLEAR: r = push(o, BITMAP_OP_CLEAR, NULL); break;
        case OPT_ENABLE: r = push(o, BITMAP_OP_ENABLE, NULL); break;
        case OPT_DISABLE:
            /* After --add: the new bitmap ends disabled, as in qemu-img. */
            r = push(o, BITMAP_OP_DISABLE, NULL);
            break;
        case OPT_MERGE:
            o->merge = true;
            r = push(o, BITMAP_OP_MERGE, optarg);
            break;
        case 'g':
            if (vimg_parse_size(optarg, &o->granularity) == -1) {
                cmd_error("Invalid granularity specified. You may use k, "
                          "M, G, T, P or E suffixes for");
                cmd_error("kilobytes, megabytes, gigabytes, terabytes, "
                          "petabytes and exabytes.");
                return -1;
            }
            break;
        case 'b': o->src_file = optarg; break;
        case 'F': o->src_fmt = optarg; break;
        case 'f': o->fmt = optarg; break;
        case OPT_IMAGE_OPTS: o->image_opts = true; break;
        default: cmd_bad_option(argv); return -1;
        }
        if (r == -1)
            return -1;
    }
    return 0;
}

/* qemu-img's checks, in its order. */
static int
validate(int argc, const struct opts *o)
{
    if (!o->n)
        cmd_error("Need at least one of --add, --remove, --clear, "
                  "--enable, --disable, or --merge");
    else if (o->granularity && !o->add)
        cmd_error("granularity only supported with --add");
    else if (o->src_fmt && !o->src_file)
        cmd_error("-F only supported with -b");
    else if (o->src_file && !o->merge)
        cmd_error("Merge bitmap source file only supported with --merge");
    else if (optind != argc - 2)
        cmd_error("Expecting filename and bitmap name");
    else
        return 0;
    return -1;
}

static int
run(struct opts *o, const char *file, const char *name)
{
    vimg_node *h, *src = NULL;
    unsigned flags = VIMG_OPEN_RDWR | VIMG_OPEN_NO_BACKING;
    int ret = 0;

    h = cmd_open_image(file, o->fmt, o->image_opts, flags);
    if (!h)
        return 1;
    if (o->src_file) {
        src = cmd_open_image(o->src_file, o->src_fmt, o->image_opts,
                             VIMG_OPEN_NO_BACKING);
        if (!src) {
            vimg_close(h);
            return 1;
        }
    }
    for (size_t i = 0; i < o->n; i++) {
        struct bitmap_action *a = &o->acts[i];
        a->name = name;
        /* Too large: 1, which the driver rejects with qemu's message. */
        a->granularity = o->granularity > UINT32_MAX
                             ? 1
                             : (uint32_t)o->granularity;
        a->src = src ? node_of(src) : NULL;
        a->next = i + 1 < o->n ? &o->acts[i + 1] : NULL;
    }
    if (!node_of(h)->drv->bitmap_op) {
        cmd_error("Operation %s on bitmap %s failed: Can't store persistent "
                  "bitmaps to %s: Operation not supported",
                  o->acts[0].op == BITMAP_OP_ADD ? "add" : "remove", name,
                  file);
        ret = 1;
    } else if (node_of(h)->drv->bitmap_op(node_of(h), o->acts) == -1) {
        cmd_error("%s", vimg_get_error());
        ret = 1;
    }
    if (src)
        vimg_close(src);
    if (vimg_close(h) == -1 && ret == 0) {
        cmd_error("%s: %s", file, vimg_get_error());
        ret = 1;
    }
    return ret;
}

int
cmd_bitmap(int argc, char **argv)
{
    struct opts o;
    int r;

    memset(&o, 0, sizeof o);
    r = parse(argc, argv, &o);
    if (r == 0)
        r = validate(argc, &o);
    if (r == 0)
        r = run(&o, argv[optind], argv[optind + 1]);
    else
        r = r == 1 ? 0 : 1;
    free(o.acts);
    return r;
}
