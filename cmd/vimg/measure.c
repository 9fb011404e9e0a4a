/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg measure [--output=human|json] [-O FMT] [-o OPTS] [-f FMT | --image-opts]
 *              [-U] (--size N | FILE)
 *
 * qemu-img 7.2's measure: the target driver's measure callback gives the
 * required and fully allocated sizes; the "bitmaps" figure (room for the
 * source's persistent bitmaps) is printed only when qemu prints it: a
 * qcow2 v3 target measured from a qcow2 v3 source.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "checked.h"
#include "cleanup.h"
#include "cmd.h"
#include "node.h"
#include "options.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg measure [--output=human|json] [-O FMT] [-o OPTS]\n"
    "                    [-f FMT | --image-opts] [-U] (--size N | FILE)\n"
    "\n"
    "  -O FMT            format of the image to measure for (default raw)\n"
    "  -o OPTS           its create options (cluster_size=, compat=, ...)\n"
    "  --size N          measure an empty image of N bytes\n"
    "  -f FMT            format of FILE (probed if absent)\n"
    "  --image-opts      FILE is an option string (driver=qcow2,...)\n"
    "  -U, --force-share open FILE read-only and share it\n"
    "  --output=FMT      human (default) or json\n";

/* qcow2's calc_dir_entry_size(): a bitmap directory entry. */
static uint64_t
dir_entry_size(size_t name_len)
{
    return ALIGN_UP(24 + (uint64_t)name_len, 8);
}

/* qcow2_get_persistent_dirty_bitmap_size() from the source's ImageInfo:
 * every bitmap fully allocated, its table and the directory. */
static uint64_t
bitmaps_size(json_t *bitmaps, uint64_t vsize, uint64_t cs)
{
    uint64_t total = 0, dir = 0;
    size_t i;
    json_t *b;

    json_array_foreach(bitmaps, i, b) {
        const char *name = json_string_value(json_object_get(b, "name"));
        uint64_t gran = json_integer_value(json_object_get(b, "granularity"));
        uint64_t bytes, clusters;

        if (!name || !gran)
            continue;
        bytes = DIV_ROUND_UP(DIV_ROUND_UP(vsize, gran), 8);
        clusters = DIV_ROUND_UP(bytes, cs);
        total += clusters * cs + ALIGN_UP(clusters * 8, cs);
        dir += dir_entry_size(strlen(name));
    }
    return total + ALIGN_UP(dir, cs);
}

/* Does qemu print "bitmaps" here, and with which value? */
static int
get_bitmaps(vimg_node *src, const char *out_fmt, json_t *opts,
            bool *has, uint64_t *size)
{
    CLEANUP_FREE char *text = NULL;
    const char *compat = opts_get_str(opts, "compat");
    json_t *info, *data;
    uint64_t cs = 65536;

    *has = false;
    if (!src || strcmp(out_fmt, "qcow2") ||
        (compat && (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))) ||
        strcmp(vimg_get_format(src), "qcow2"))
        return 0;
    if (!(text = vimg_info_json(src)) ||
        !(info = json_loads(text, 0, NULL)))
        return -1;
    data = json_object_get(json_object_get(info, "format-specific"), "data");
    if (strcmp(json_string_value(json_object_get(data, "compat")) ?: "",
               "0.10")) {
        if (opts_get_size(opts, "cluster_size", 65536, &cs) == -1) {
            json_decref(info);
            return -1;
        }
        *has = true;
        *size = bitmaps_size(json_object_get(data, "bitmaps"),
                             (uint64_t)vimg_get_size(src), cs);
    }
    json_decref(info);
    return 0;
}

static void
print_result(bool json, uint64_t required, uint64_t full, bool has_bitmaps,
             uint64_t bitmaps)
{
    if (!json) {
        printf("required size: %" PRIu64 "\n", required);
        printf("fully allocated size: %" PRIu64 "\n", full);
        if (has_bitmaps)
            printf("bitmaps size: %" PRIu64 "\n", bitmaps);
        return;
    }
    printf("{\n");
    if (has_bitmaps)
        printf("    \"bitmaps\": %" PRIu64 ",\n", bitmaps);
    printf("    \"required\": %" PRIu64 ",\n", required);
    printf("    \"fully-allocated\": %" PRIu64 "\n}\n", full);
}

/* Measure for OUT_FMT with OPTIONS (may be NULL), from SRC or SIZE. */
static int
measure(vimg_node *src, uint64_t size, const char *out_fmt,
        const char *options, bool json)
{
    const struct driver *drv = driver_find(out_fmt);
    uint64_t required, full, bitmaps = 0;
    bool has_bitmaps;
    json_t *opts;
    int r = -1;

    if (!drv || drv->kind != DRV_FORMAT) {
        cmd_error("Unknown file format '%s'", out_fmt);
        return -1;
    }
    if (!drv->measure) {
        cmd_error("Block driver '%s' does not support size measurement",
                  out_fmt);
        return -1;
    }
    if (!(opts = opts_parse_dotted(options ? options : "", NULL))) {
        cmd_error("Invalid options for file format '%s': %s", out_fmt,
                  vimg_get_error());
        return -1;
    }
    if (!src)
        json_object_set_new(opts, "size", json_integer((json_int_t)size));
    if (drv->measure(opts, src ? node_of(src) : NULL, &required, &full) ==
            -1 ||
        get_bitmaps(src, out_fmt, opts, &has_bitmaps, &bitmaps) == -1)
        cmd_lib_error(NULL);
    else {
        print_result(json, required, full, has_bitmaps, bitmaps);
        r = 0;
    }
    json_decref(opts);
    return r;
}

int
cmd_measure(int argc, char **argv)
{
    enum { OPT_IMAGE_OPTS = 256, OPT_OUTPUT, OPT_SIZE };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "size", required_argument, NULL, OPT_SIZE },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *out_fmt = "raw", *file = NULL;
    CLEANUP_FREE char *options = NULL;
    bool image_opts = false, json = false;
    uint64_t size = UINT64_MAX;
    unsigned flags = 0;
    vimg_node *src = NULL;
    int c, r;

    while ((c = getopt_long(argc, argv, "f:O:o:l:Uh", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'o':
            if (cmd_append_opts(&options, optarg) == -1) {
                cmd_error("out of memory");
                return 1;
            }
            break;
        case 'l':
            cmd_error("-l: snapshots are not supported");
            return 1;
        case 'U': flags |= VIMG_OPEN_FORCE_SHARE; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_SIZE:
            if (optarg[0] == '-' || vimg_parse_size(optarg, &size) == -1 ||
                size > INT64_MAX) {
                cmd_error("Invalid image size specified: '%s'", optarg);
                return 1;
            }
            break;
        case OPT_OUTPUT:
            if (cmd_parse_output(optarg, &json) == -1)
                return 1;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (optind < argc - 1)
        return cmd_usage_error("Expecting at most one filename");
    if (optind == argc - 1)
        file = argv[optind];
    if (file && size != UINT64_MAX) {
        cmd_error("--size N cannot be used together with a filename.");
        return 1;
    }
    if (!file && size == UINT64_MAX) {
        cmd_error("Either --size N or one filename must be specified.");
        return 1;
    }
    if (image_opts && fmt)
        return cmd_usage_error("--image-opts and -f are exclusive");
    if (file && !(src = cmd_open_image(file, fmt, image_opts, flags)))
        return 1;
    r = measure(src, size, out_fmt, options, json);
    if (src)
        vimg_close(src);
    return r == 0 ? 0 : 1;
}
