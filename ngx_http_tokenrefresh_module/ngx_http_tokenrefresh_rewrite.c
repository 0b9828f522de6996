
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * A login answer, rewritten for the app: the same JSON without the
 * members the tokens were read from (found by the same JSON Pointers),
 * and with the session's handle as a member of the top-level object if
 * configured.  yajl parses and yajl_gen writes; what is not dropped keeps
 * its value (numbers as they were written, strings re-escaped).
 *
 * Nothing here logs, and both yajl handles are freed before return.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <yajl/yajl_parse.h>
#include <yajl/yajl_gen.h>


#define NGX_HTTP_TOKENREFRESH_MAX_DROP  4


typedef struct {
    ngx_uint_t                        array;
    ngx_uint_t                        index;
    ngx_uint_t                        mask;     /* pointers still possible */
} ngx_http_tokenrefresh_rframe_t;


typedef struct {
    yajl_gen                          gen;
    ngx_http_tokenrefresh_pointer_t **drop;
    ngx_uint_t                        ndrop;
    ngx_str_t                        *member;
    ngx_str_t                        *value;

    /* what the next value is: dropped, or a container's pointer mask */
    ngx_uint_t                        next_drop;
    ngx_uint_t                        next_mask;

    /* inside a dropped value: its depth of nesting */
    ngx_uint_t                        skip;

    ngx_uint_t                        depth;
    ngx_http_tokenrefresh_rframe_t    frames[NGX_HTTP_TOKENREFRESH_MAX_DEPTH
                                             + 1];
    ngx_uint_t                        root_object;
    ngx_uint_t                        failed;
} ngx_http_tokenrefresh_rewrite_t;


static void ngx_http_tokenrefresh_rw_element(
    ngx_http_tokenrefresh_rewrite_t *rw);
static ngx_uint_t ngx_http_tokenrefresh_rw_value(
    ngx_http_tokenrefresh_rewrite_t *rw);
static int ngx_http_tokenrefresh_rw_null(void *ctx);
static int ngx_http_tokenrefresh_rw_boolean(void *ctx, int v);
static int ngx_http_tokenrefresh_rw_number(void *ctx, const char *s,
    size_t len);
static int ngx_http_tokenrefresh_rw_string(void *ctx,
    const unsigned char *s, size_t len);
static int ngx_http_tokenrefresh_rw_start_map(void *ctx);
static int ngx_http_tokenrefresh_rw_map_key(void *ctx,
    const unsigned char *key, size_t len);
static int ngx_http_tokenrefresh_rw_end_map(void *ctx);
static int ngx_http_tokenrefresh_rw_start_array(void *ctx);
static int ngx_http_tokenrefresh_rw_end_array(void *ctx);
static ngx_uint_t ngx_http_tokenrefresh_rw_open(
    ngx_http_tokenrefresh_rewrite_t *rw, ngx_uint_t array);


static yajl_callbacks  ngx_http_tokenrefresh_rw_callbacks = {
    ngx_http_tokenrefresh_rw_null,
    ngx_http_tokenrefresh_rw_boolean,
    NULL,
    NULL,
    ngx_http_tokenrefresh_rw_number,
    ngx_http_tokenrefresh_rw_string,
    ngx_http_tokenrefresh_rw_start_map,
    ngx_http_tokenrefresh_rw_map_key,
    ngx_http_tokenrefresh_rw_end_map,
    ngx_http_tokenrefresh_rw_start_array,
    ngx_http_tokenrefresh_rw_end_array
};


/*
 * NGX_DECLINED: not JSON, or a member to add and no top-level object to
 * add it to.
 */

ngx_int_t
ngx_http_tokenrefresh_rewrite(ngx_pool_t *pool, ngx_str_t *in,
    ngx_http_tokenrefresh_pointer_t **drop, ngx_uint_t ndrop,
    ngx_str_t *member, ngx_str_t *value, ngx_str_t *out)
{
    size_t                           len;
    ngx_int_t                        rc;
    ngx_uint_t                       i;
    yajl_handle                      h;
    yajl_status                      st;
    const unsigned char             *buf;
    ngx_http_tokenrefresh_rewrite_t  rw;

    ngx_memzero(&rw, sizeof(ngx_http_tokenrefresh_rewrite_t));

    rw.drop = drop;
    rw.ndrop = ngx_min(ndrop, NGX_HTTP_TOKENREFRESH_MAX_DROP);
    rw.member = member;
    rw.value = value;

    /* the top-level value: every pointer below it may still match */

    for (i = 0; i < rw.ndrop; i++) {
        if (drop[i] && drop[i]->segments && drop[i]->segments->nelts) {
            rw.next_mask |= (ngx_uint_t) 1 << i;
        }
    }

    rw.gen = yajl_gen_alloc(NULL);
    if (rw.gen == NULL) {
        return NGX_ERROR;
    }

    h = yajl_alloc(&ngx_http_tokenrefresh_rw_callbacks, NULL, &rw);
    if (h == NULL) {
        yajl_gen_free(rw.gen);
        return NGX_ERROR;
    }

    st = yajl_parse(h, in->data, in->len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }

    yajl_free(h);

    rc = NGX_DECLINED;

    if (st == yajl_status_ok && !rw.failed
        && (member->len == 0 || rw.root_object)
        && yajl_gen_get_buf(rw.gen, &buf, &len) == yajl_gen_status_ok)
    {
        out->data = ngx_pnalloc(pool, len + 1);

        if (out->data == NULL) {
            rc = NGX_ERROR;

        } else {
            /* a newline at the end, as most JSON APIs answer */
            ngx_memcpy(out->data, buf, len);
            out->data[len] = '\n';
            out->len = len + 1;
            rc = NGX_OK;
        }
    }

    yajl_gen_free(rw.gen);

    return rc;
}


/*
 * An array element or a map member's value is about to start: in an
 * array, its index is the key the pointers are matched against.
 */

static void
ngx_http_tokenrefresh_rw_element(ngx_http_tokenrefresh_rewrite_t *rw)
{
    u_char                          buf[NGX_INT_T_LEN];
    ngx_str_t                      *seg;
    ngx_uint_t                      i, d, len;
    ngx_http_tokenrefresh_rframe_t *f;

    if (rw->depth == 0 || rw->skip) {
        return;
    }

    f = &rw->frames[rw->depth];

    if (!f->array) {
        return;
    }

    len = ngx_sprintf(buf, "%ui", f->index) - buf;
    f->index++;

    rw->next_drop = 0;
    rw->next_mask = 0;

    d = rw->depth - 1;

    for (i = 0; i < rw->ndrop; i++) {

        if (!(f->mask & ((ngx_uint_t) 1 << i))) {
            continue;
        }

        seg = rw->drop[i]->segments->elts;

        if (seg[d].len != len || ngx_memcmp(seg[d].data, buf, len) != 0) {
            continue;
        }

        if (rw->drop[i]->segments->nelts == d + 1) {
            rw->next_drop = 1;

        } else {
            rw->next_mask |= (ngx_uint_t) 1 << i;
        }
    }
}


/* 1: the value starting now is written; 0: it is dropped */

static ngx_uint_t
ngx_http_tokenrefresh_rw_value(ngx_http_tokenrefresh_rewrite_t *rw)
{
    ngx_http_tokenrefresh_rw_element(rw);

    if (rw->skip) {
        return 0;
    }

    if (rw->next_drop) {
        rw->next_drop = 0;
        return 0;
    }

    return 1;
}


#define ngx_http_tokenrefresh_rw_gen(rw, call)                                \
    if ((call) != yajl_gen_status_ok) {                                       \
        (rw)->failed = 1;                                                     \
        return 0;                                                             \
    }


static int
ngx_http_tokenrefresh_rw_null(void *ctx)
{
    ngx_http_tokenrefresh_rewrite_t *rw = ctx;

    if (ngx_http_tokenrefresh_rw_value(rw)) {
        ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_null(rw->gen));
    }

    return 1;
}


static int
ngx_http_tokenrefresh_rw_boolean(void *ctx, int v)
{
    ngx_http_tokenrefresh_rewrite_t *rw = ctx;

    if (ngx_http_tokenrefresh_rw_value(rw)) {
        ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_bool(rw->gen, v));
    }

    return 1;
}


static int
ngx_http_tokenrefresh_rw_number(void *ctx, const char *s, size_t len)
{
    ngx_http_tokenrefresh_rewrite_t *rw = ctx;

    if (ngx_http_tokenrefresh_rw_value(rw)) {
        ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_number(rw->gen, s, len));
    }

    return 1;
}


static int
ngx_http_tokenrefresh_rw_string(void *ctx, const unsigned char *s,
    size_t len)
{
    ngx_http_tokenrefresh_rewrite_t *rw = ctx;

    if (ngx_http_tokenrefresh_rw_value(rw)) {
        ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_string(rw->gen, s, len));
    }

    return 1;
}


static int
ngx_http_tokenrefresh_rw_start_map(void *ctx)
{
    return ngx_http_tokenrefresh_rw_open(ctx, 0);
}


static int
ngx_http_tokenrefresh_rw_start_array(void *ctx)
{
    return ngx_http_tokenrefresh_rw_open(ctx, 1);
}


static ngx_uint_t
ngx_http_tokenrefresh_rw_open(ngx_http_tokenrefresh_rewrite_t *rw,
    ngx_uint_t array)
{
    ngx_uint_t                       mask;
    ngx_http_tokenrefresh_rframe_t  *f;

    if (!ngx_http_tokenrefresh_rw_value(rw)) {
        /* a dropped container, or one inside it */
        rw->skip++;
        return 1;
    }

    if (rw->depth == NGX_HTTP_TOKENREFRESH_MAX_DEPTH) {
        rw->failed = 1;
        return 0;
    }

    mask = rw->next_mask;
    rw->next_mask = 0;

    if (rw->depth == 0 && !array) {
        rw->root_object = 1;
    }

    rw->depth++;

    f = &rw->frames[rw->depth];
    f->array = array;
    f->index = 0;
    f->mask = mask;

    ngx_http_tokenrefresh_rw_gen(rw, array ? yajl_gen_array_open(rw->gen)
                                           : yajl_gen_map_open(rw->gen));

    return 1;
}


static int
ngx_http_tokenrefresh_rw_map_key(void *ctx, const unsigned char *key,
    size_t len)
{
    ngx_http_tokenrefresh_rewrite_t *rw = ctx;

    ngx_str_t                       *seg;
    ngx_uint_t                       i, d;
    ngx_http_tokenrefresh_rframe_t  *f;

    if (rw->skip) {
        return 1;
    }

    f = &rw->frames[rw->depth];

    rw->next_drop = 0;
    rw->next_mask = 0;

    d = rw->depth - 1;

    for (i = 0; i < rw->ndrop; i++) {

        if (!(f->mask & ((ngx_uint_t) 1 << i))) {
            continue;
        }

        seg = rw->drop[i]->segments->elts;

        if (seg[d].len != len || ngx_memcmp(seg[d].data, key, len) != 0) {
            continue;
        }

        if (rw->drop[i]->segments->nelts == d + 1) {
            rw->next_drop = 1;

        } else {
            rw->next_mask |= (ngx_uint_t) 1 << i;
        }
    }

    /* the handle's own member is the module's: an old one is dropped */

    if (rw->depth == 1 && rw->member->len == len
        && ngx_memcmp(rw->member->data, key, len) == 0)
    {
        rw->next_drop = 1;
    }

    if (rw->next_drop) {
        return 1;
    }

    ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_string(rw->gen, key, len));

    return 1;
}


static int
ngx_http_tokenrefresh_rw_end_map(void *ctx)
{
    ngx_http_tokenrefresh_rewrite_t *rw = ctx;

    if (rw->skip) {
        rw->skip--;
        return 1;
    }

    if (rw->depth == 1 && rw->member->len) {
        ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_string(rw->gen,
                                                         rw->member->data,
                                                         rw->member->len));
        ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_string(rw->gen,
                                                         rw->value->data,
                                                         rw->value->len));
    }

    rw->depth--;

    ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_map_close(rw->gen));

    return 1;
}


static int
ngx_http_tokenrefresh_rw_end_array(void *ctx)
{
    ngx_http_tokenrefresh_rewrite_t *rw = ctx;

    if (rw->skip) {
        rw->skip--;
        return 1;
    }

    rw->depth--;

    ngx_http_tokenrefresh_rw_gen(rw, yajl_gen_array_close(rw->gen));

    return 1;
}
