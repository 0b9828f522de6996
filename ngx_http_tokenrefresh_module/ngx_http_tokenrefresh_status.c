
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * The status page: every credential of every zone, in JSON (generated with
 * yajl) or in the Prometheus text exposition format; and, when the
 * location allows writes, the operator controls (force a refresh, forget a
 * credential) as POST requests.  Never a token: at most its fingerprint.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <yajl/yajl_gen.h>


#define NGX_HTTP_TOKENREFRESH_JSON        0
#define NGX_HTTP_TOKENREFRESH_PROMETHEUS  1


typedef struct {
    ngx_str_t                         name;
    ngx_http_tokenrefresh_zone_info_t info;
} ngx_http_tokenrefresh_zone_report_t;


typedef struct {
    ngx_http_request_t               *request;
    ngx_chain_t                      *out;
    ngx_chain_t                     **last;
    ngx_buf_t                        *buf;
} ngx_http_tokenrefresh_text_t;


typedef struct {
    const char                       *name;
    const char                       *type;
    const char                       *help;
    size_t                            offset;
    ngx_uint_t                        msec;
} ngx_http_tokenrefresh_metric_t;


static ngx_int_t ngx_http_tokenrefresh_status_handler(ngx_http_request_t *r);
static void ngx_http_tokenrefresh_json_fleet(yajl_gen g,
    ngx_http_tokenrefresh_fleet_stats_t *fs);
static ngx_int_t ngx_http_tokenrefresh_control_handler(ngx_http_request_t *r);
static ngx_chain_t *ngx_http_tokenrefresh_control_answer(
    ngx_http_request_t *r, ngx_str_t *zone, ngx_str_t *name,
    ngx_str_t *action, ngx_str_t *result);
static ngx_array_t *ngx_http_tokenrefresh_collect_zones(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_json(ngx_http_request_t *r,
    ngx_array_t *zones, ngx_chain_t **out);
static void ngx_http_tokenrefresh_json_credential(yajl_gen g,
    ngx_http_tokenrefresh_info_t *ci, int64_t now);
static ngx_int_t ngx_http_tokenrefresh_prometheus(ngx_http_request_t *r,
    ngx_array_t *zones, ngx_chain_t **out);
static ngx_int_t ngx_http_tokenrefresh_end_sessions(ngx_http_request_t *r,
    ngx_http_tokenrefresh_zone_t *z, ngx_str_t *name, ngx_uint_t subject,
    ngx_str_t *result);
static ngx_int_t ngx_http_tokenrefresh_text(ngx_http_tokenrefresh_text_t *t,
    const char *fmt, ...);
static ngx_str_t *ngx_http_tokenrefresh_label(ngx_pool_t *pool,
    ngx_str_t *value);
static ngx_uint_t ngx_http_tokenrefresh_state(
    ngx_http_tokenrefresh_info_t *ci, int64_t now);
static ngx_int_t ngx_http_tokenrefresh_send(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, ngx_chain_t *out);


static const char  *ngx_http_tokenrefresh_states[] = {
    "valid", "expired", "rejected", "empty", "refreshing", "backing_off",
    "failed"
};

#define NGX_HTTP_TOKENREFRESH_S_VALID        0
#define NGX_HTTP_TOKENREFRESH_S_EXPIRED      1
#define NGX_HTTP_TOKENREFRESH_S_REJECTED     2
#define NGX_HTTP_TOKENREFRESH_S_EMPTY        3
#define NGX_HTTP_TOKENREFRESH_S_REFRESHING   4
#define NGX_HTTP_TOKENREFRESH_S_BACKING_OFF  5
#define NGX_HTTP_TOKENREFRESH_S_FAILED       6
#define NGX_HTTP_TOKENREFRESH_STATES         7

static const char  *ngx_http_tokenrefresh_outcome_names[] = {
    "ok", "refused", "bad", "timeout", "abandoned", "unknown", "no_room",
    "denied"
};


#define ngx_http_tokenrefresh_key(g, s)                                       \
    yajl_gen_string(g, (const unsigned char *) s, sizeof(s) - 1)

#define ngx_http_tokenrefresh_counter(field)                                  \
    offsetof(ngx_http_tokenrefresh_info_t, counters.field)

#define ngx_http_tokenrefresh_zone_field(field)                               \
    offsetof(ngx_http_tokenrefresh_zone_info_t, field)

static ngx_http_tokenrefresh_metric_t  ngx_http_tokenrefresh_zone_metrics[] = {

    { "tokenrefresh_zone_size_bytes", "gauge",
      "Size of the shared memory zone.",
      ngx_http_tokenrefresh_zone_field(size), 0 },

    { "tokenrefresh_zone_used_bytes", "gauge",
      "Memory of the zone in use.",
      ngx_http_tokenrefresh_zone_field(used), 0 },

    { "tokenrefresh_zone_credentials", "gauge",
      "Credentials in the zone.",
      ngx_http_tokenrefresh_zone_field(count), 0 },

    { "tokenrefresh_zone_evictions_total", "counter",
      "Idle credentials evicted from a full zone.",
      ngx_http_tokenrefresh_zone_field(evictions), 0 },

    { "tokenrefresh_zone_full_total", "counter",
      "Times the zone had no room left.",
      ngx_http_tokenrefresh_zone_field(nomem), 0 },

    { "tokenrefresh_zone_evictions_refused_total", "counter",
      "Times a full zone kept a credential whose refresh token is its "
      "only way back.",
      ngx_http_tokenrefresh_zone_field(kept), 0 },

    { "tokenrefresh_zone_unknown_outcomes_total", "counter",
      "Refreshes cut after they were sent, whose outcome is unknown.",
      ngx_http_tokenrefresh_zone_field(unknown), 0 },

    { "tokenrefresh_zone_sessions", "gauge",
      "Users' sessions in the zone.",
      ngx_http_tokenrefresh_zone_field(sessions), 0 },

    { "tokenrefresh_zone_sessions_created_total", "counter",
      "Users' sessions created by a login.",
      ngx_http_tokenrefresh_zone_field(sessions_created), 0 },

    { "tokenrefresh_zone_sessions_refused_total", "counter",
      "Users' sessions ended because their refresh was refused.",
      ngx_http_tokenrefresh_zone_field(sessions_refused), 0 },

    { "tokenrefresh_zone_sessions_idle_total", "counter",
      "Users' sessions ended after their idle time.",
      ngx_http_tokenrefresh_zone_field(sessions_idle), 0 },

    { "tokenrefresh_zone_sessions_expired_total", "counter",
      "Users' sessions ended at their lifetime.",
      ngx_http_tokenrefresh_zone_field(sessions_expired), 0 },

    { "tokenrefresh_zone_sessions_logout_total", "counter",
      "Users' sessions ended by a logout.",
      ngx_http_tokenrefresh_zone_field(sessions_logout), 0 },

    { "tokenrefresh_zone_sessions_ended_total", "counter",
      "Users' sessions ended by an operator.",
      ngx_http_tokenrefresh_zone_field(sessions_ended), 0 },

    { "tokenrefresh_zone_sessions_evicted_total", "counter",
      "Least recently used sessions ended by a full zone.",
      ngx_http_tokenrefresh_zone_field(sessions_evicted), 0 },

    { NULL, NULL, NULL, 0, 0 }
};


#define ngx_http_tokenrefresh_fleet_field(field)                              \
    offsetof(ngx_http_tokenrefresh_zone_info_t, fleet_stats.field)

/* zones with redis= only */
static ngx_http_tokenrefresh_metric_t  ngx_http_tokenrefresh_fleet_metrics[] = {

    { "tokenrefresh_fleet_connected_workers", "gauge",
      "Workers connected to the fleet's redis.",
      ngx_http_tokenrefresh_fleet_field(up), 0 },

    { "tokenrefresh_fleet_connections_lost_total", "counter",
      "Connections to the fleet's redis lost.",
      ngx_http_tokenrefresh_fleet_field(lost), 0 },

    { "tokenrefresh_fleet_rtt_seconds", "gauge",
      "Round trip of the last command to the fleet's redis.",
      ngx_http_tokenrefresh_fleet_field(rtt), 1 },

    { "tokenrefresh_fleet_leases_total", "counter",
      "Refreshes that took the fleet's lease.",
      ngx_http_tokenrefresh_fleet_field(leases), 0 },

    { "tokenrefresh_fleet_lease_waits_total", "counter",
      "Refreshes that found the fleet's lease held by another node.",
      ngx_http_tokenrefresh_fleet_field(waits), 0 },

    { "tokenrefresh_fleet_adopted_total", "counter",
      "Newer tokens taken from the fleet instead of a refresh.",
      ngx_http_tokenrefresh_fleet_field(adopted), 0 },

    { "tokenrefresh_fleet_stored_total", "counter",
      "New tokens stored in the fleet.",
      ngx_http_tokenrefresh_fleet_field(stored), 0 },

    { "tokenrefresh_fleet_refused_total", "counter",
      "New tokens the fleet refused or did not get (kept on the node).",
      ngx_http_tokenrefresh_fleet_field(fenced), 0 },

    { "tokenrefresh_fleet_held_back_total", "counter",
      "Refreshes held back because the fleet's redis was away.",
      ngx_http_tokenrefresh_fleet_field(away), 0 },

    { "tokenrefresh_fleet_fallbacks_total", "counter",
      "Logins done by the node alone because the fleet's redis was away.",
      ngx_http_tokenrefresh_fleet_field(fallbacks), 0 },

    { "tokenrefresh_fleet_news_total", "counter",
      "Announcements of new generations heard, by all workers.",
      ngx_http_tokenrefresh_fleet_field(news), 0 },

    { "tokenrefresh_fleet_errors_total", "counter",
      "Errors from the fleet's redis, and records that could not be "
      "opened.",
      ngx_http_tokenrefresh_fleet_field(errors), 0 },

    { NULL, NULL, NULL, 0, 0 }
};


static ngx_http_tokenrefresh_metric_t  ngx_http_tokenrefresh_metrics[] = {

    { "tokenrefresh_requests_total", "counter",
      "Requests that used the credential.",
      ngx_http_tokenrefresh_counter(requests), 0 },

    { "tokenrefresh_requests_failed_total", "counter",
      "Requests that failed for want of a token.",
      ngx_http_tokenrefresh_counter(failed), 0 },

    { "tokenrefresh_waits_total", "counter",
      "Requests that waited for a token being fetched.",
      ngx_http_tokenrefresh_counter(waits), 0 },

    { "tokenrefresh_wait_seconds_total", "counter",
      "Time requests spent waiting for a token.",
      ngx_http_tokenrefresh_counter(wait_msec), 1 },

    { "tokenrefresh_wait_seconds_max", "gauge",
      "The longest a request waited for a token.",
      ngx_http_tokenrefresh_counter(wait_msec_max), 1 },

    { "tokenrefresh_waiting", "gauge",
      "Requests waiting for a token now, in all workers.",
      offsetof(ngx_http_tokenrefresh_info_t, waiting), 0 },

    { "tokenrefresh_replays_total", "counter",
      "Requests sent again after the upstream rejected their token.",
      ngx_http_tokenrefresh_counter(replays), 0 },

    { "tokenrefresh_replays_refused_total", "counter",
      "Rejected requests that could not be sent again (a streamed body, a "
      "method not replayed, an error_page, a second rejection).",
      ngx_http_tokenrefresh_counter(replays_refused), 0 },

    { "tokenrefresh_rejections_total", "counter",
      "Rejections of the current token by the upstream.",
      ngx_http_tokenrefresh_counter(rejections), 0 },

    { "tokenrefresh_token_generation", "gauge",
      "Access tokens stored for the credential so far.",
      offsetof(ngx_http_tokenrefresh_info_t, generation), 0 },

    { "tokenrefresh_backoff_seconds", "gauge",
      "Time until the next refresh or login may be attempted.",
      offsetof(ngx_http_tokenrefresh_info_t, retry_in), 1 },

    { "tokenrefresh_last_fetch_duration_seconds", "gauge",
      "How long the last refresh or login took.",
      offsetof(ngx_http_tokenrefresh_info_t, last_duration), 1 },

    { NULL, NULL, NULL, 0, 0 }
};


char *
ngx_http_tokenrefresh_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    if (tlcf->status != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    tlcf->status = NGX_HTTP_TOKENREFRESH_JSON;
    tlcf->status_write = 0;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "json") == 0) {
            tlcf->status = NGX_HTTP_TOKENREFRESH_JSON;
            continue;
        }

        if (ngx_strcmp(value[i].data, "prometheus") == 0) {
            tlcf->status = NGX_HTTP_TOKENREFRESH_PROMETHEUS;
            continue;
        }

        if (ngx_strcmp(value[i].data, "write=on") == 0) {
            tlcf->status_write = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "write=off") == 0) {
            tlcf->status_write = 0;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected \"json\", "
                           "\"prometheus\" or \"write=on\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_tokenrefresh_status_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_str_t                          arg;
    ngx_uint_t                         format;
    ngx_array_t                       *zones;
    ngx_chain_t                       *out;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    if (r->method == NGX_HTTP_POST) {
        return ngx_http_tokenrefresh_control_handler(r);
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);
    format = tlcf->status;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {
        if (arg.len == 10 && ngx_strncmp(arg.data, "prometheus", 10) == 0) {
            format = NGX_HTTP_TOKENREFRESH_PROMETHEUS;

        } else if (arg.len == 4 && ngx_strncmp(arg.data, "json", 4) == 0) {
            format = NGX_HTTP_TOKENREFRESH_JSON;

        } else {
            return NGX_HTTP_BAD_REQUEST;
        }
    }

    zones = ngx_http_tokenrefresh_collect_zones(r);
    if (zones == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (format == NGX_HTTP_TOKENREFRESH_PROMETHEUS) {
        if (ngx_http_tokenrefresh_prometheus(r, zones, &out) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_tokenrefresh_send(r, NGX_HTTP_OK,
                                    "text/plain; version=0.0.4; "
                                    "charset=utf-8", out);
    }

    if (ngx_http_tokenrefresh_json(r, zones, &out) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_tokenrefresh_send(r, NGX_HTTP_OK, "application/json",
                                      out);
}


/*
 * Ends sessions for an operator.  NGX_OK with "ended N" in result, or
 * NGX_DECLINED when none matched.
 */

static ngx_int_t
ngx_http_tokenrefresh_end_sessions(ngx_http_request_t *r,
    ngx_http_tokenrefresh_zone_t *z, ngx_str_t *name, ngx_uint_t subject,
    ngx_str_t *result)
{
    u_char      *p, *dst, *src;
    u_char       digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    ngx_str_t    v;
    ngx_uint_t   n;

    dst = ngx_pnalloc(r->pool, name->len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    src = name->data;
    p = dst;
    ngx_unescape_uri(&p, &src, name->len, 0);

    v.data = dst;
    v.len = p - dst;

    if (subject) {
        ngx_http_tokenrefresh_digest(digest, v.data, v.len);
        n = ngx_http_tokenrefresh_session_end_all(z, digest, NULL, 0);

    } else {
        /* the label's "session:" may be left out */

        if (v.len < sizeof("session:") - 1
            || ngx_strncmp(v.data, "session:", sizeof("session:") - 1) != 0)
        {
            p = ngx_pnalloc(r->pool, v.len + sizeof("session:") - 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(ngx_cpymem(p, "session:", sizeof("session:") - 1),
                       v.data, v.len);
            v.data = p;
            v.len += sizeof("session:") - 1;
        }

        n = ngx_http_tokenrefresh_session_end_all(z, NULL, v.data, v.len);
    }

    if (n == 0) {
        return NGX_DECLINED;
    }

    if (z->state) {
        (void) ngx_http_tokenrefresh_journal_put(z, NULL, 1, NULL, NULL, NULL,
                                                 r->connection->log);
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "tokenrefresh: %ui session%s of zone \"%V\" ended by an "
                  "operator request", n, n == 1 ? "" : "s",
                  &z->shm_zone->shm.name);

    result->data = ngx_pnalloc(r->pool, sizeof("ended ") + NGX_INT_T_LEN);
    if (result->data == NULL) {
        return NGX_ERROR;
    }

    result->len = ngx_sprintf(result->data, "ended %ui", n) - result->data;

    return NGX_OK;
}


/*
 * POST ?zone=Z&credential=C&action=refresh|forget.  The location must say
 * "write=on"; who may write is for allow/deny or auth to decide.
 */

static ngx_int_t
ngx_http_tokenrefresh_control_handler(ngx_http_request_t *r)
{
    u_char                            *p, *dst, *src;
    ngx_int_t                          rc;
    ngx_str_t                          zone, name, action, result;
    ngx_uint_t                         i, forget, status, subject;
    ngx_chain_t                       *out;
    ngx_list_part_t                   *part;
    ngx_shm_zone_t                    *shm_zone;
    ngx_http_tokenrefresh_zone_t      *z;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    if (!tlcf->status_write) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_arg(r, (u_char *) "zone", 4, &zone) != NGX_OK
        || ngx_http_arg(r, (u_char *) "action", 6, &action) != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    /*
     * action=end ends users' sessions: session=<its label, or the first
     * 12 or more hex digits of it> or subject=<the JWT "sub">, all of
     * that user's sessions ("log out everywhere")
     */

    subject = 0;

    if (action.len == 3 && ngx_strncmp(action.data, "end", 3) == 0) {
        forget = 2;

        if (ngx_http_arg(r, (u_char *) "subject", 7, &name) == NGX_OK) {
            subject = 1;

        } else if (ngx_http_arg(r, (u_char *) "session", 7, &name) != NGX_OK
                   || name.len < 12)
        {
            return NGX_HTTP_BAD_REQUEST;
        }

    } else if (ngx_http_arg(r, (u_char *) "credential", 10, &name) != NGX_OK
               || name.len == 0)
    {
        return NGX_HTTP_BAD_REQUEST;

    } else if (action.len == 7 && ngx_strncmp(action.data, "refresh", 7) == 0)
    {
        forget = 0;

    } else if (action.len == 6 && ngx_strncmp(action.data, "forget", 6) == 0)
    {
        forget = 1;

    } else {
        return NGX_HTTP_BAD_REQUEST;
    }

    /* the arguments are URL-encoded */

    dst = ngx_pnalloc(r->pool, name.len);
    if (dst == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    src = name.data;
    p = dst;
    ngx_unescape_uri(&p, &src, name.len, 0);

    name.data = dst;
    name.len = p - dst;

    z = NULL;
    /* this worker's uses of tokens, counted without the lock, first */

    ngx_http_tokenrefresh_flush_all();

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].tag == &ngx_http_tokenrefresh_module
            && shm_zone[i].data
            && shm_zone[i].shm.name.len == zone.len
            && ngx_strncmp(shm_zone[i].shm.name.data, zone.data, zone.len)
               == 0)
        {
            z = shm_zone[i].data;
            break;
        }
    }

    if (z == NULL) {
        rc = NGX_DECLINED;

    } else if (forget == 2) {
        rc = ngx_http_tokenrefresh_end_sessions(r, z, &name, subject,
                                                &result);
        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_OK) {
            status = NGX_HTTP_OK;
            goto answer;
        }

    } else {
        rc = ngx_http_tokenrefresh_control(z, &name, forget);
    }

    if (rc == NGX_OK && z->state) {
        (void) ngx_http_tokenrefresh_state_save(z, r->connection->log);
    }

    switch (rc) {

    case NGX_OK:
        status = NGX_HTTP_OK;
        ngx_str_set(&result, "done");

        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "tokenrefresh: credential \"%V\" in zone \"%V\": %s "
                      "by an operator request", &name, &zone,
                      forget ? "forgotten" : "token dropped for a refresh");
        break;

    case NGX_BUSY:
        status = NGX_HTTP_CONFLICT;
        ngx_str_set(&result, "busy: a refresh is in flight");
        break;

    default:
        status = NGX_HTTP_NOT_FOUND;

        if (forget == 2) {
            ngx_str_set(&result, "no such session");

        } else {
            ngx_str_set(&result, "no such credential");
        }

        break;
    }

answer:

    out = ngx_http_tokenrefresh_control_answer(r, &zone, &name, &action,
                                               &result);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_tokenrefresh_send(r, status, "application/json", out);
}


/* {"zone": ..., "credential": ..., "action": ..., "result": ...} */

static ngx_chain_t *
ngx_http_tokenrefresh_control_answer(ngx_http_request_t *r, ngx_str_t *zone,
    ngx_str_t *name, ngx_str_t *action, ngx_str_t *result)
{
    size_t                len;
    yajl_gen              g;
    ngx_buf_t            *b;
    ngx_chain_t          *out;
    const unsigned char  *buf;

    g = yajl_gen_alloc(NULL);
    if (g == NULL) {
        return NULL;
    }

    yajl_gen_map_open(g);
    ngx_http_tokenrefresh_key(g, "zone");
    yajl_gen_string(g, zone->data, zone->len);
    ngx_http_tokenrefresh_key(g, "credential");
    yajl_gen_string(g, name->data, name->len);
    ngx_http_tokenrefresh_key(g, "action");
    yajl_gen_string(g, action->data, action->len);
    ngx_http_tokenrefresh_key(g, "result");
    yajl_gen_string(g, result->data, result->len);
    yajl_gen_map_close(g);

    out = NULL;

    if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok) {
        goto done;
    }

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        goto done;
    }

    b->last = ngx_cpymem(b->last, buf, len);
    *b->last++ = '\n';

    out = ngx_alloc_chain_link(r->pool);
    if (out == NULL) {
        goto done;
    }

    out->buf = b;
    out->next = NULL;

done:

    yajl_gen_free(g);

    return out;
}


static ngx_array_t *
ngx_http_tokenrefresh_collect_zones(ngx_http_request_t *r)
{
    ngx_uint_t                            i;
    ngx_array_t                          *zones;
    ngx_list_part_t                      *part;
    ngx_shm_zone_t                       *shm_zone;
    ngx_http_tokenrefresh_zone_report_t  *zr;

    zones = ngx_array_create(r->pool, 2,
                             sizeof(ngx_http_tokenrefresh_zone_report_t));
    if (zones == NULL) {
        return NULL;
    }

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].tag != &ngx_http_tokenrefresh_module
            || shm_zone[i].data == NULL)
        {
            continue;
        }

        zr = ngx_array_push(zones);
        if (zr == NULL) {
            return NULL;
        }

        zr->name = shm_zone[i].shm.name;

        if (ngx_http_tokenrefresh_snapshot(shm_zone[i].data, r->pool,
                                           &zr->info)
            != NGX_OK)
        {
            return NULL;
        }
    }

    return zones;
}


static ngx_int_t
ngx_http_tokenrefresh_json(ngx_http_request_t *r, ngx_array_t *zones,
    ngx_chain_t **out)
{
    size_t                                len;
    int64_t                               now;
    yajl_gen                              g;
    ngx_buf_t                            *b;
    ngx_uint_t                            i, j;
    const unsigned char                  *buf;
    ngx_http_tokenrefresh_info_t         *ci;
    ngx_http_tokenrefresh_zone_report_t  *zr;

    g = yajl_gen_alloc(NULL);
    if (g == NULL) {
        return NGX_ERROR;
    }

    yajl_gen_config(g, yajl_gen_beautify, 1);

    now = ngx_http_tokenrefresh_now();
    zr = zones->elts;

    yajl_gen_map_open(g);

    ngx_http_tokenrefresh_key(g, "time");
    yajl_gen_integer(g, now / 1000);

    ngx_http_tokenrefresh_key(g, "zones");
    yajl_gen_map_open(g);

    for (i = 0; i < zones->nelts; i++) {
        yajl_gen_string(g, zr[i].name.data, zr[i].name.len);
        yajl_gen_map_open(g);

        ngx_http_tokenrefresh_key(g, "size");
        yajl_gen_integer(g, zr[i].info.size);
        ngx_http_tokenrefresh_key(g, "used");
        yajl_gen_integer(g, zr[i].info.used);
        ngx_http_tokenrefresh_key(g, "evictions");
        yajl_gen_integer(g, zr[i].info.evictions);
        ngx_http_tokenrefresh_key(g, "full");
        yajl_gen_integer(g, zr[i].info.nomem);
        ngx_http_tokenrefresh_key(g, "evictions_refused");
        yajl_gen_integer(g, zr[i].info.kept);
        ngx_http_tokenrefresh_key(g, "unknown_outcomes");
        yajl_gen_integer(g, zr[i].info.unknown);

        ngx_http_tokenrefresh_key(g, "sessions");
        yajl_gen_map_open(g);
        ngx_http_tokenrefresh_key(g, "live");
        yajl_gen_integer(g, zr[i].info.sessions);
        ngx_http_tokenrefresh_key(g, "created");
        yajl_gen_integer(g, zr[i].info.sessions_created);
        ngx_http_tokenrefresh_key(g, "refused");
        yajl_gen_integer(g, zr[i].info.sessions_refused);
        ngx_http_tokenrefresh_key(g, "idle");
        yajl_gen_integer(g, zr[i].info.sessions_idle);
        ngx_http_tokenrefresh_key(g, "lifetime");
        yajl_gen_integer(g, zr[i].info.sessions_expired);
        ngx_http_tokenrefresh_key(g, "logout");
        yajl_gen_integer(g, zr[i].info.sessions_logout);
        ngx_http_tokenrefresh_key(g, "operator");
        yajl_gen_integer(g, zr[i].info.sessions_ended);
        ngx_http_tokenrefresh_key(g, "evicted");
        yajl_gen_integer(g, zr[i].info.sessions_evicted);
        yajl_gen_map_close(g);

        if (zr[i].info.fleet) {
            ngx_http_tokenrefresh_json_fleet(g, &zr[i].info.fleet_stats);
        }

        ngx_http_tokenrefresh_key(g, "credentials");
        yajl_gen_map_open(g);

        ci = zr[i].info.credentials->elts;

        for (j = 0; j < zr[i].info.credentials->nelts; j++) {
            yajl_gen_string(g, ci[j].name.data, ci[j].name.len);
            ngx_http_tokenrefresh_json_credential(g, &ci[j], now);
        }

        yajl_gen_map_close(g);
        yajl_gen_map_close(g);
    }

    yajl_gen_map_close(g);
    yajl_gen_map_close(g);

    if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok) {
        yajl_gen_free(g);
        return NGX_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        yajl_gen_free(g);
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, buf, len);
    *b->last++ = '\n';

    yajl_gen_free(g);

    *out = ngx_alloc_chain_link(r->pool);
    if (*out == NULL) {
        return NGX_ERROR;
    }

    (*out)->buf = b;
    (*out)->next = NULL;

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_json_credential(yajl_gen g,
    ngx_http_tokenrefresh_info_t *ci, int64_t now)
{
    u_char       fp[NGX_HTTP_TOKENREFRESH_FP_LEN];
    ngx_uint_t   grant, outcome;
    const char  *s;

    yajl_gen_map_open(g);

    ngx_http_tokenrefresh_key(g, "state");
    s = ngx_http_tokenrefresh_states[ngx_http_tokenrefresh_state(ci, now)];
    yajl_gen_string(g, (const unsigned char *) s, ngx_strlen(s));

    ngx_http_tokenrefresh_key(g, "token");

    if (ci->token.len) {
        yajl_gen_map_open(g);

        ngx_http_tokenrefresh_fingerprint(fp, ci->token.data, ci->token.len);

        ngx_http_tokenrefresh_key(g, "fingerprint");
        yajl_gen_string(g, fp, NGX_HTTP_TOKENREFRESH_FP_LEN);
        ngx_http_tokenrefresh_key(g, "generation");
        yajl_gen_integer(g, ci->generation);

        if (ci->fleet_generation) {
            /* the fleet's number: the same on every node, unlike the above */
            ngx_http_tokenrefresh_key(g, "fleet_generation");
            yajl_gen_integer(g, ci->fleet_generation);
        }

        ngx_http_tokenrefresh_key(g, "issued");
        yajl_gen_integer(g, ci->issued / 1000);
        ngx_http_tokenrefresh_key(g, "expires");
        yajl_gen_integer(g, ci->expires / 1000);
        ngx_http_tokenrefresh_key(g, "expires_in");
        yajl_gen_integer(g, (ci->expires - now) / 1000);
        ngx_http_tokenrefresh_key(g, "refresh_token");
        yajl_gen_bool(g, ci->has_refresh);

        yajl_gen_map_close(g);

    } else {
        yajl_gen_null(g);
    }

    ngx_http_tokenrefresh_key(g, "refreshing");

    if (ci->lease_pid) {
        yajl_gen_map_open(g);
        ngx_http_tokenrefresh_key(g, "worker");
        yajl_gen_integer(g, ci->lease_pid);
        ngx_http_tokenrefresh_key(g, "grant");
        s = ngx_http_tokenrefresh_grant_names[ci->lease_grant];
        yajl_gen_string(g, (const unsigned char *) s, ngx_strlen(s));
        ngx_http_tokenrefresh_key(g, "lease_ms");
        yajl_gen_integer(g, ci->lease_left);
        yajl_gen_map_close(g);

    } else {
        yajl_gen_null(g);
    }

    ngx_http_tokenrefresh_key(g, "backoff");

    if (ci->retry_in) {
        yajl_gen_map_open(g);
        ngx_http_tokenrefresh_key(g, "failures");
        yajl_gen_integer(g, ci->fails);
        ngx_http_tokenrefresh_key(g, "retry_in_ms");
        yajl_gen_integer(g, ci->retry_in);
        yajl_gen_map_close(g);

    } else {
        yajl_gen_null(g);
    }

    ngx_http_tokenrefresh_key(g, "last_fetch");

    if (ci->last_time) {
        yajl_gen_map_open(g);
        ngx_http_tokenrefresh_key(g, "time");
        yajl_gen_integer(g, ci->last_time);
        ngx_http_tokenrefresh_key(g, "grant");
        s = ngx_http_tokenrefresh_grant_names[ci->last_grant];
        yajl_gen_string(g, (const unsigned char *) s, ngx_strlen(s));
        ngx_http_tokenrefresh_key(g, "outcome");
        s = ngx_http_tokenrefresh_outcome_names[ci->last_outcome];
        yajl_gen_string(g, (const unsigned char *) s, ngx_strlen(s));
        ngx_http_tokenrefresh_key(g, "duration_ms");
        yajl_gen_integer(g, ci->last_duration);
        yajl_gen_map_close(g);

    } else {
        yajl_gen_null(g);
    }

    ngx_http_tokenrefresh_key(g, "requests");
    yajl_gen_integer(g, ci->counters.requests);
    ngx_http_tokenrefresh_key(g, "failed");
    yajl_gen_integer(g, ci->counters.failed);
    ngx_http_tokenrefresh_key(g, "waiting");
    yajl_gen_integer(g, ci->waiting);
    ngx_http_tokenrefresh_key(g, "waits");
    yajl_gen_integer(g, ci->counters.waits);
    ngx_http_tokenrefresh_key(g, "wait_ms_total");
    yajl_gen_integer(g, ci->counters.wait_msec);
    ngx_http_tokenrefresh_key(g, "wait_ms_max");
    yajl_gen_integer(g, ci->counters.wait_msec_max);
    ngx_http_tokenrefresh_key(g, "replays");
    yajl_gen_integer(g, ci->counters.replays);
    ngx_http_tokenrefresh_key(g, "replays_refused");
    yajl_gen_integer(g, ci->counters.replays_refused);
    ngx_http_tokenrefresh_key(g, "rejections");
    yajl_gen_integer(g, ci->counters.rejections);

    ngx_http_tokenrefresh_key(g, "fetches");
    yajl_gen_map_open(g);

    for (grant = NGX_HTTP_TOKENREFRESH_GRANT_REFRESH;
         grant < NGX_HTTP_TOKENREFRESH_GRANTS;
         grant++)
    {
        s = ngx_http_tokenrefresh_grant_names[grant];
        yajl_gen_string(g, (const unsigned char *) s, ngx_strlen(s));
        yajl_gen_map_open(g);

        for (outcome = 0; outcome < NGX_HTTP_TOKENREFRESH_OUTCOMES; outcome++)
        {
            s = ngx_http_tokenrefresh_outcome_names[outcome];
            yajl_gen_string(g, (const unsigned char *) s, ngx_strlen(s));
            yajl_gen_integer(g, ci->counters.fetches[grant][outcome]);
        }

        yajl_gen_map_close(g);
    }

    yajl_gen_map_close(g);

    yajl_gen_map_close(g);
}


/* the Prometheus text exposition format, version 0.0.4 */

static ngx_int_t
ngx_http_tokenrefresh_prometheus(ngx_http_request_t *r, ngx_array_t *zones,
    ngx_chain_t **out)
{
    int64_t                               now;
    ngx_str_t                           **labels, *zname;
    ngx_uint_t                            i, j, k, n, state, grant, outcome,
                                          fleet;
    ngx_uint_t                           *value;
    ngx_http_tokenrefresh_text_t          t;
    ngx_http_tokenrefresh_info_t         *ci;
    ngx_http_tokenrefresh_metric_t       *m;
    ngx_http_tokenrefresh_zone_report_t  *zr;

    now = ngx_http_tokenrefresh_now();

    ngx_memzero(&t, sizeof(ngx_http_tokenrefresh_text_t));
    t.request = r;
    t.last = &t.out;

    zr = zones->elts;

    /* escape the credential names once */

    n = 0;

    for (i = 0; i < zones->nelts; i++) {
        n += zr[i].info.credentials->nelts;
    }

    labels = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_str_t *));
    if (labels == NULL) {
        return NGX_ERROR;
    }

    k = 0;

    for (i = 0; i < zones->nelts; i++) {
        ci = zr[i].info.credentials->elts;

        for (j = 0; j < zr[i].info.credentials->nelts; j++) {
            labels[k] = ngx_http_tokenrefresh_label(r->pool, &ci[j].name);
            if (labels[k] == NULL) {
                return NGX_ERROR;
            }

            k++;
        }
    }

#define ngx_http_tokenrefresh_family(name, type, help)                        \
    if (ngx_http_tokenrefresh_text(&t, "# HELP %s %s\n# TYPE %s %s\n",       \
                                   name, help, name, type)                    \
        != NGX_OK)                                                            \
    {                                                                         \
        return NGX_ERROR;                                                     \
    }

#define ngx_http_tokenrefresh_each(code)                                      \
    k = 0;                                                                    \
    for (i = 0; i < zones->nelts; i++) {                                      \
        zname = ngx_http_tokenrefresh_label(r->pool, &zr[i].name);            \
        if (zname == NULL) {                                                  \
            return NGX_ERROR;                                                 \
        }                                                                     \
        ci = zr[i].info.credentials->elts;                                    \
        for (j = 0; j < zr[i].info.credentials->nelts; j++, k++) {            \
            code                                                              \
        }                                                                     \
    }

    for (m = ngx_http_tokenrefresh_zone_metrics; m->name; m++) {

        ngx_http_tokenrefresh_family(m->name, m->type, m->help);

        for (i = 0; i < zones->nelts; i++) {
            zname = ngx_http_tokenrefresh_label(r->pool, &zr[i].name);
            value = (ngx_uint_t *) ((u_char *) &zr[i].info + m->offset);

            if (zname == NULL
                || ngx_http_tokenrefresh_text(&t, "%s{zone=\"%V\"} %ui\n",
                                              m->name, zname, *value)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    for (fleet = 0, i = 0; i < zones->nelts; i++) {
        fleet |= zr[i].info.fleet;
    }

    for (m = ngx_http_tokenrefresh_fleet_metrics; m->name && fleet; m++) {
        ngx_http_tokenrefresh_family(m->name, m->type, m->help);

        for (i = 0; i < zones->nelts; i++) {

            if (!zr[i].info.fleet) {
                continue;
            }

            zname = ngx_http_tokenrefresh_label(r->pool, &zr[i].name);
            value = (ngx_uint_t *) ((u_char *) &zr[i].info + m->offset);

            if (zname == NULL
                || (m->msec
                    ? ngx_http_tokenrefresh_text(&t,
                                           "%s{zone=\"%V\"} %ui.%03ui\n",
                                           m->name, zname, *value / 1000,
                                           *value % 1000)
                    : ngx_http_tokenrefresh_text(&t,
                                           "%s{zone=\"%V\"} %ui\n",
                                           m->name, zname, *value))
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    ngx_http_tokenrefresh_family("tokenrefresh_state", "gauge",
                                 "State of the credential: 1 for the "
                                 "current one.");

    ngx_http_tokenrefresh_each(
        state = ngx_http_tokenrefresh_state(&ci[j], now);

        for (n = 0; n < NGX_HTTP_TOKENREFRESH_STATES; n++) {
            if (ngx_http_tokenrefresh_text(&t,
                    "tokenrefresh_state{zone=\"%V\",credential=\"%V\","
                    "state=\"%s\"} %d\n", zname, labels[k],
                    ngx_http_tokenrefresh_states[n], n == state)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    )

    ngx_http_tokenrefresh_family("tokenrefresh_token_expires_in_seconds",
                                 "gauge",
                                 "Time until the access token expires.");

    ngx_http_tokenrefresh_each(
        if (ci[j].token.len
            && ngx_http_tokenrefresh_text(&t,
                   "tokenrefresh_token_expires_in_seconds{zone=\"%V\","
                   "credential=\"%V\"} %L\n", zname, labels[k],
                   (ci[j].expires - now) / 1000)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    )

    ngx_http_tokenrefresh_family("tokenrefresh_fetches_total", "counter",
                                 "Refreshes and logins, by outcome.");

    ngx_http_tokenrefresh_each(
        for (grant = NGX_HTTP_TOKENREFRESH_GRANT_REFRESH;
             grant < NGX_HTTP_TOKENREFRESH_GRANTS;
             grant++)
        {
            for (outcome = 0;
                 outcome < NGX_HTTP_TOKENREFRESH_OUTCOMES;
                 outcome++)
            {
                if (ngx_http_tokenrefresh_text(&t,
                        "tokenrefresh_fetches_total{zone=\"%V\","
                        "credential=\"%V\",grant=\"%s\",outcome=\"%s\"} "
                        "%ui\n", zname, labels[k],
                        ngx_http_tokenrefresh_grant_names[grant],
                        ngx_http_tokenrefresh_outcome_names[outcome],
                        (ngx_uint_t) ci[j].counters.fetches[grant][outcome])
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }
            }
        }
    )

    ngx_http_tokenrefresh_family("tokenrefresh_last_fetch_timestamp_seconds",
                                 "gauge",
                                 "When the last refresh or login ended.");

    ngx_http_tokenrefresh_each(
        if (ci[j].last_time
            && ngx_http_tokenrefresh_text(&t,
                   "tokenrefresh_last_fetch_timestamp_seconds{zone=\"%V\","
                   "credential=\"%V\"} %T\n", zname, labels[k],
                   ci[j].last_time)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    )

    for (m = ngx_http_tokenrefresh_metrics; m->name; m++) {

        ngx_http_tokenrefresh_family(m->name, m->type, m->help);

        ngx_http_tokenrefresh_each(
            value = (ngx_uint_t *) ((u_char *) &ci[j] + m->offset);

            if (m->msec) {
                if (ngx_http_tokenrefresh_text(&t,
                        "%s{zone=\"%V\",credential=\"%V\"} %ui.%03ui\n",
                        m->name, zname, labels[k], *value / 1000,
                        *value % 1000)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else if (ngx_http_tokenrefresh_text(&t,
                           "%s{zone=\"%V\",credential=\"%V\"} %ui\n",
                           m->name, zname, labels[k], *value)
                       != NGX_OK)
            {
                return NGX_ERROR;
            }
        )
    }

#undef ngx_http_tokenrefresh_family
#undef ngx_http_tokenrefresh_each

    if (t.out == NULL
        && ngx_http_tokenrefresh_text(&t, "%s", "") != NGX_OK)
    {
        return NGX_ERROR;
    }

    *out = t.out;

    return NGX_OK;
}


/* appends a line to a chain of buffers; no line is longer than 2 KB */

static ngx_int_t
ngx_http_tokenrefresh_text(ngx_http_tokenrefresh_text_t *t,
    const char *fmt, ...)
{
    va_list       args;
    ngx_chain_t  *cl;

    if (t->buf == NULL || t->buf->end - t->buf->last < 2048) {
        t->buf = ngx_create_temp_buf(t->request->pool, 16384);
        if (t->buf == NULL) {
            return NGX_ERROR;
        }

        cl = ngx_alloc_chain_link(t->request->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = t->buf;
        cl->next = NULL;

        *t->last = cl;
        t->last = &cl->next;
    }

    va_start(args, fmt);
    t->buf->last = ngx_vslprintf(t->buf->last, t->buf->last + 2048, fmt,
                                 args);
    va_end(args);

    return NGX_OK;
}


/* a label value: backslash, double quote and line feed escaped */

static ngx_str_t *
ngx_http_tokenrefresh_label(ngx_pool_t *pool, ngx_str_t *value)
{
    u_char     *p, *s, *end;
    ngx_str_t  *l;

    l = ngx_palloc(pool, sizeof(ngx_str_t));
    if (l == NULL) {
        return NULL;
    }

    l->data = ngx_pnalloc(pool, value->len * 2 + 1);
    if (l->data == NULL) {
        return NULL;
    }

    p = l->data;
    end = value->data + value->len;

    for (s = value->data; s < end; s++) {
        if (*s == '\\' || *s == '"') {
            *p++ = '\\';
            *p++ = *s;

        } else if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else {
            *p++ = *s;
        }
    }

    l->len = p - l->data;

    return l;
}


static ngx_uint_t
ngx_http_tokenrefresh_state(ngx_http_tokenrefresh_info_t *ci, int64_t now)
{
    if (ci->lease_pid) {
        return NGX_HTTP_TOKENREFRESH_S_REFRESHING;
    }

    if (ci->retry_in) {
        return ci->failed ? NGX_HTTP_TOKENREFRESH_S_FAILED
                          : NGX_HTTP_TOKENREFRESH_S_BACKING_OFF;
    }

    if (ci->token.len == 0) {
        return NGX_HTTP_TOKENREFRESH_S_EMPTY;
    }

    if (ci->rejected) {
        return NGX_HTTP_TOKENREFRESH_S_REJECTED;
    }

    if (now >= ci->expires) {
        return NGX_HTTP_TOKENREFRESH_S_EXPIRED;
    }

    return NGX_HTTP_TOKENREFRESH_S_VALID;
}


static ngx_int_t
ngx_http_tokenrefresh_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, ngx_chain_t *out)
{
    off_t         len;
    ngx_int_t     rc;
    ngx_chain_t  *cl;

    len = 0;

    for (cl = out; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;

        if (cl->next == NULL) {
            cl->buf->last_buf = (r == r->main);
            cl->buf->last_in_chain = 1;
        }
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    /* counters change all the time */
    r->allow_ranges = 0;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


/* what the fleet's redis did for a zone */

static void
ngx_http_tokenrefresh_json_fleet(yajl_gen g,
    ngx_http_tokenrefresh_fleet_stats_t *fs)
{
    ngx_http_tokenrefresh_key(g, "fleet");
    yajl_gen_map_open(g);
    ngx_http_tokenrefresh_key(g, "connected_workers");
    yajl_gen_integer(g, fs->up);
    ngx_http_tokenrefresh_key(g, "connections_lost");
    yajl_gen_integer(g, fs->lost);
    ngx_http_tokenrefresh_key(g, "rtt_ms");
    yajl_gen_integer(g, fs->rtt);
    ngx_http_tokenrefresh_key(g, "leases");
    yajl_gen_integer(g, fs->leases);
    ngx_http_tokenrefresh_key(g, "lease_waits");
    yajl_gen_integer(g, fs->waits);
    ngx_http_tokenrefresh_key(g, "adopted");
    yajl_gen_integer(g, fs->adopted);
    ngx_http_tokenrefresh_key(g, "stored");
    yajl_gen_integer(g, fs->stored);
    ngx_http_tokenrefresh_key(g, "refused");
    yajl_gen_integer(g, fs->fenced);
    ngx_http_tokenrefresh_key(g, "held_back");
    yajl_gen_integer(g, fs->away);
    ngx_http_tokenrefresh_key(g, "fallbacks");
    yajl_gen_integer(g, fs->fallbacks);
    ngx_http_tokenrefresh_key(g, "errors");
    yajl_gen_integer(g, fs->errors);
    ngx_http_tokenrefresh_key(g, "news");
    yajl_gen_integer(g, fs->news);
    yajl_gen_map_close(g);
}
