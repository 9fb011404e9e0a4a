/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg resize [-f FMT | --image-opts] [--shrink] [--preallocation=MODE]
 *             [-q] FILE [+|-]SIZE
 *
 * qemu-img 7.2's resize: the size is taken off the end of the command
 * line before the options are parsed (so "-1G" is not an option),
 * shrinking needs --shrink, preallocation only grows.  As qemu does,
 * when a backing file would show through the new area (it is longer
 * than the old size), the new area is made to read as zeroes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "checked.h"
#include "cmd.h"
#include "io.h"
#include "node.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg resize [-f FMT | --image-opts] [--shrink]\n"
    "                   [--preallocation=MODE] [-q] FILE [+|-]SIZE\n"
    "\n"
    "  -f FMT               format of FILE (probed if absent)\n"
    "  --image-opts         FILE is an option string (driver=qcow2,...)\n"
    "  --shrink             allow making the image smaller (drops data)\n"
    "  --preallocation=MODE off, metadata (qcow2), falloc or full\n"
    "  -q                   quiet\n"
    "\n"
    "SIZE takes k, M, G, T, P, E suffixes; +SIZE grows, -SIZE shrinks.\n";

static int
parse_prealloc(const char *s, enum prealloc *p)
{
    static const char *const names[] = { "off", "metadata", "falloc",
                                         "full" };

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!strcmp(s, names[i])) {
            *p = (enum prealloc)i;
            return 0;
        }
    }
    cmd_error("Invalid preallocation mode '%s'", s);
    return -1;
}

/* The new area of an overlay must not show its backing file. */
static int
zero_new_area(struct node *n, uint64_t old, uint64_t size)
{
    if (!n->backing || n->backing->size <= old || size <= old)
        return 0;
    return node_pwrite_zeroes(n, old, size - old, 0);
}

static int
do_resize(struct node *n, const char *file, int rel, uint64_t val,
          bool shrink, enum prealloc prealloc)
{
    uint64_t cur = n->size, size;

    if (rel < 0 && val >= cur) {
        cmd_error("New image size must be positive");
        return -1;
    }
    if (rel > 0 && (ADD_OVERFLOW(cur, val, &size) || size > INT64_MAX)) {
        cmd_error("New image size is too large");
        return -1;
    }
    size = rel < 0 ? cur - val : rel > 0 ? cur + val : val;
    if (size == 0) {
        cmd_error("New image size must be positive");
        return -1;
    }
    if (size <= cur && prealloc != PREALLOC_OFF) {
        cmd_error("Preallocation can only be used for growing images");
        return -1;
    }
    if (size < cur && !shrink) {
        cmd_error("Use the --shrink option to perform a shrink operation.");
        return -1;
    }
    if (!strcmp(n->drv->name, "qcow2") && size % 512) {
        cmd_error("The new size must be a multiple of 512");
        return -1;
    }
    if (!strcmp(n->drv->name, "raw") && prealloc == PREALLOC_METADATA) {
        cmd_error("Unsupported preallocation mode: metadata");
        return -1;
    }
    if (node_truncate(n, size, prealloc) == -1 ||
        zero_new_area(n, cur, size) == -1 || node_flush(n) == -1) {
        cmd_error("%s: %s", file, vimg_get_error());
        return -1;
    }
    return 0;
}

int
cmd_resize(int argc, char **argv)
{
    enum { OPT_IMAGE_OPTS = 256, OPT_SHRINK, OPT_PREALLOC };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "shrink", no_argument, NULL, OPT_SHRINK },
        { "preallocation", required_argument, NULL, OPT_PREALLOC },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *file, *arg;
    bool image_opts = false, shrink = false, quiet = false;
    enum prealloc prealloc = PREALLOC_OFF;
    uint64_t val;
    vimg_node *h;
    int c, r, rel = 0;

    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (argc < 3)
        return cmd_usage_error("Not enough arguments");
    /* The size goes first, so that "-1G" is not taken for an option. */
    arg = argv[--argc];
    while ((c = getopt_long(argc, argv, "f:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_SHRINK: shrink = true; break;
        case OPT_PREALLOC:
            if (parse_prealloc(optarg, &prealloc) == -1)
                return 1;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (optind != argc - 1)
        return cmd_usage_error("Expecting image file name and size");
    file = argv[optind];
    if (image_opts && fmt)
        return cmd_usage_error("--image-opts and -f are exclusive");
    if (arg[0] == '+' || arg[0] == '-')
        rel = *arg++ == '+' ? 1 : -1;
    if (arg[0] == '-' || arg[0] == '+' || vimg_parse_size(arg, &val) == -1 ||
        val > INT64_MAX) {
        cmd_error("Invalid size '%s': expecting a non-negative number with "
                  "an optional k, M, G, T, P or E suffix", argv[argc]);
        return 1;
    }
    h = cmd_open_image(file, fmt, image_opts, VIMG_OPEN_RDWR);
    if (!h)
        return 1;
    r = do_resize(node_of(h), file, rel, val, shrink, prealloc);
    if (vimg_close(h) == -1 && r == 0) {
        cmd_error("%s: %s", file, vimg_get_error());
        r = -1;
    }
    if (r == 0 && !quiet)
        printf("Image resized.\n");
    return r == 0 ? 0 : 1;
}
