/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vimg map [-f FMT | --image-opts] [--output=human|json]
 *          [-s|--start-offset N] [-l|--max-length N] [-U]
 *          [--bitmap NAME] FILE
 *
 * qemu-img 7.2's map: walks the chain layer by layer the way its
 * get_block_status() does (stop at the first layer whose answer has data
 * or zero; an unallocated range at the bottom reads as zero there),
 * builds MapEntry-like extents and merges neighbours with qemu's
 * entry_mergeable() rules, streaming the output.  The human form lists
 * only data areas and refuses data without an offset (compressed).
 *
 * The time is proportional to the number of extents the drivers report:
 * a driver answers a whole unallocated L1 range in one step.
 *
 * With --bitmap NAME it lists instead the dirty and clean extents of a
 * persistent bitmap (a vimg extension): alternating extents covering the
 * window, each as long as possible, so neighbours never share a kind.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bitmap.h"
#include "checked.h"
#include "cmd.h"
#include "io.h"
#include "node.h"
#include "vimg.h"

static const char usage_text[] =
    "Usage: vimg map [-f FMT | --image-opts] [--output=human|json]\n"
    "                [--start-offset N] [--max-length N] [-U]\n"
    "                [--bitmap NAME] FILE\n"
    "\n"
    "  -f FMT              format of FILE (probed if absent)\n"
    "  --image-opts        FILE is an option string (driver=qcow2,...)\n"
    "  --output=FMT        human (default) or json\n"
    "  -s, --start-offset  first guest byte to map\n"
    "  -l, --max-length    map at most N bytes\n"
    "  -U, --force-share   open read-only and share the image\n"
    "  --bitmap NAME       list the dirty and clean extents of the\n"
    "                      persistent bitmap NAME instead\n";

/* qemu-img's MapEntry. */
struct map_entry {
    uint64_t start, length, offset;
    int64_t depth;
    bool present, zero, data, has_offset;
    struct node *file; /* node holding the offset (has_offset only) */
};

/* qemu-img's get_block_status(): the first layer from the top whose
 * answer has data or zero decides. */
static int
get_status(struct node *n, uint64_t off, uint64_t count,
           struct map_entry *e)
{
    int64_t depth = 0;
    struct extent x;
    bool zero_below;

    for (;;) {
        if (node_block_status_layer(n, true, off, count, &x) == -1)
            return -1;
        count = x.length;
        if (x.flags & (EXT_DATA | EXT_ZERO))
            break;
        /* Unallocated here: zero when nothing is below (qemu adds ZERO
         * in this layer, with depth = this layer). */
        zero_below = !n->backing || off >= n->backing->size;
        if (zero_below) {
            x.flags |= EXT_ZERO;
            x.flags &= ~EXT_ALLOCATED;
            break;
        }
        count = MIN(count, n->backing->size - off);
        n = n->backing;
        depth++;
    }
    *e = (struct map_entry){
        .start = off,
        .length = count,
        .depth = depth,
        .present = (x.flags & EXT_ALLOCATED) != 0,
        .zero = (x.flags & EXT_ZERO) != 0,
        .data = (x.flags & EXT_DATA) != 0,
        .has_offset = (x.flags & EXT_OFFSET) != 0,
        .offset = (x.flags & EXT_OFFSET) ? x.offset : 0,
        .file = (x.flags & EXT_OFFSET) ? (x.file ? x.file : n->file) : NULL,
    };
    return 0;
}

/* qemu-img's entry_mergeable(). */
static bool
mergeable(const struct map_entry *c, const struct map_entry *n)
{
    if (c->length == 0)
        return false;
    if (c->zero != n->zero || c->data != n->data || c->depth != n->depth ||
        c->present != n->present || c->has_offset != n->has_offset ||
        c->file != n->file)
        return false;
    if (c->has_offset && c->offset + c->length != n->offset)
        return false;
    return true;
}

static const char *
file_name(const struct map_entry *e)
{
    return e->file && e->file->filename ? e->file->filename : "";
}

/* qemu-img's dump_map_entry(); NEXT may be changed (human output folds
 * zero and unallocated areas together). */
static int
dump_entry(bool json, const struct map_entry *e, struct map_entry *next)
{
    if (!json) {
        if (e->data && !e->has_offset) {
            cmd_error("File contains external, encrypted or compressed "
                      "clusters.");
            return -1;
        }
        if (e->data && !e->zero)
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
                   e->start, e->length, e->has_offset ? e->offset : 0,
                   file_name(e));
        if (next && (!next->data || next->zero)) {
            next->data = false;
            next->zero = true;
        }
        return 0;
    }
    printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
           ", \"depth\": %" PRId64 ", \"present\": %s, \"zero\": %s"
           ", \"data\": %s",
           e->start, e->length, e->depth, e->present ? "true" : "false",
           e->zero ? "true" : "false", e->data ? "true" : "false");
    if (e->has_offset)
        printf(", \"offset\": %" PRIu64, e->offset);
    putchar('}');
    if (next)
        puts(",");
    return 0;
}

static int
map_image(struct node *n, bool json, uint64_t start, uint64_t max_len)
{
    uint64_t length = n->size;
    struct map_entry curr = { .start = start }, next;

    if (max_len != UINT64_MAX && start + max_len < length)
        length = start + max_len;
    if (json)
        putchar('[');
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to",
               "File");
    while (curr.start + curr.length < length) {
        uint64_t off = curr.start + curr.length;

        if (get_status(n, off, length - off, &next) == -1) {
            fflush(stdout);
            cmd_error("Could not read file metadata: %s", vimg_get_error());
            return -1;
        }
        if (mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && dump_entry(json, &curr, &next) == -1)
            return -1;
        curr = next;
    }
    if (dump_entry(json, &curr, NULL) == -1)
        return -1;
    if (json)
        puts("]");
    return 0;
}

/* One extent of --bitmap output, in map's JSON array style (objects
 * separated by ",\n", the last one closing the array). */
static void
dump_bitmap_extent(bool json, uint64_t start, uint64_t len, bool dirty,
                   bool last)
{
    if (json)
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
               ", \"dirty\": %s}%s\n",
               start, len, dirty ? "true" : "false", last ? "]" : ",");
    else
        printf("%#-16" PRIx64 "%#-16" PRIx64 "%s\n", start, len,
               dirty ? "yes" : "no");
}

/* map --bitmap NAME: the extents of bitmap NAME of N's top layer in
 * [START, START+MAX_LEN) clipped to the image; an empty window prints
 * an empty list. */
static int
map_bitmap(struct node *n, const char *name, bool json, uint64_t start,
           uint64_t max_len)
{
    uint64_t end = n->size, pos = start;
    struct bitmap *bm;

    if (!n->drv->bitmap_get) {
        cmd_error("Dirty bitmap '%s' not found: format '%s' has no "
                  "persistent bitmaps",
                  name, n->drv->name);
        return -1;
    }
    bm = n->drv->bitmap_get(n, name);
    if (!bm) {
        cmd_error("%s", vimg_get_error());
        return -1;
    }
    if (max_len != UINT64_MAX && start + max_len < end)
        end = start + max_len;
    if (json)
        putchar('[');
    else
        printf("%-16s%-16s%s\n", "Offset", "Length", "Dirty");
    if (pos >= end && json)
        puts("]");
    while (pos < end) {
        bool dirty = bitmap_get(bm, pos);
        int64_t next = dirty ? bitmap_next_clean(bm, pos, end)
                             : bitmap_next_dirty(bm, pos, end);
        uint64_t stop = next == -1 ? end : (uint64_t)next;

        dump_bitmap_extent(json, pos, stop - pos, dirty, stop == end);
        pos = stop;
    }
    bitmap_free(bm);
    return 0;
}

static int
parse_num(const char *what, const char *arg, uint64_t *v)
{
    if (arg[0] == '-' || vimg_parse_size(arg, v) == -1 || *v > INT64_MAX) {
        cmd_error("Invalid %s specified: '%s' (a size with an optional "
                  "k, M, G, T, P or E suffix)", what, arg);
        return -1;
    }
    return 0;
}

int
cmd_map(int argc, char **argv)
{
    enum { OPT_IMAGE_OPTS = 256, OPT_OUTPUT, OPT_BITMAP };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "start-offset", required_argument, NULL, 's' },
        { "max-length", required_argument, NULL, 'l' },
        { "bitmap", required_argument, NULL, OPT_BITMAP },
        { NULL, 0, NULL, 0 } };
    const char *fmt = NULL, *file, *bitmap = NULL;
    bool image_opts = false, json = false;
    uint64_t start = 0, max_len = UINT64_MAX;
    unsigned flags = 0;
    vimg_node *h;
    int c, r;

    while ((c = getopt_long(argc, argv, "f:s:l:Uh", longopts, NULL)) !=
           -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': flags |= VIMG_OPEN_FORCE_SHARE; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_BITMAP: bitmap = optarg; break;
        case 's':
            if (parse_num("start offset", optarg, &start) == -1)
                return 1;
            break;
        case 'l':
            if (parse_num("max length", optarg, &max_len) == -1)
                return 1;
            break;
        case OPT_OUTPUT:
            if (cmd_parse_output(optarg, &json) == -1)
                return 1;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return cmd_bad_option(argv);
        }
    }
    if (optind != argc - 1)
        return cmd_usage_error("expecting one filename");
    file = argv[optind];
    h = cmd_open_image(file, fmt, image_opts, flags);
    if (!h)
        return 1;
    if (bitmap)
        r = map_bitmap(node_of(h), bitmap, json, start, max_len);
    else
        r = map_image(node_of(h), json, start, max_len);
    fflush(stdout);
    vimg_close(h);
    return r == 0 ? 0 : 1;
}
