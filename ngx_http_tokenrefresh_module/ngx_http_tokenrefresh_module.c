
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Directives, configuration and the attach step: the precontent phase
 * handler that makes sure a request leaves with a valid token.
 */


#include "ngx_http_tokenrefresh_module.h"


typedef struct {
    ngx_shm_zone_t                   *shm_zone;
    u_char                           *file;
    ngx_uint_t                        line;
} ngx_http_tokenrefresh_zone_ref_t;


static ngx_int_t ngx_http_tokenrefresh_handler(ngx_http_request_t *r);
static ngx_http_tokenrefresh_ctx_t *ngx_http_tokenrefresh_get_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_new_pass(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_loc_conf_t *tlcf);
static void ngx_http_tokenrefresh_attach(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_acquire_t *res);
static ngx_int_t ngx_http_tokenrefresh_next(ngx_http_tokenrefresh_ctx_t *ctx);
static void ngx_http_tokenrefresh_cleanup(void *data);

static void *ngx_http_tokenrefresh_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_tokenrefresh_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_tokenrefresh_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_tokenrefresh_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_tokenrefresh_seed_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_tokenrefresh_client_assertion(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_tokenrefresh(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_tokenrefresh_uri(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_tokenrefresh_backoff(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_tokenrefresh_failure_status(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_tokenrefresh_rejected_status(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_tokenrefresh_json(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_tokenrefresh_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_tokenrefresh_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_tokenrefresh_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_tokenrefresh_each_zone(ngx_cycle_t *cycle,
    ngx_int_t (*handler)(ngx_cycle_t *cycle,
                         ngx_http_tokenrefresh_zone_t *zone));
static ngx_int_t ngx_http_tokenrefresh_commit_zone(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone);
static ngx_int_t ngx_http_tokenrefresh_init_process(ngx_cycle_t *cycle);
static void ngx_http_tokenrefresh_exit_process(ngx_cycle_t *cycle);
static void ngx_http_tokenrefresh_flush(ngx_event_t *ev);
static ngx_int_t ngx_http_tokenrefresh_answer_status(ngx_conf_t *cf,
    ngx_str_t *value);


/* the index of the attach step in the phase engine, for a replay */
ngx_uint_t  ngx_http_tokenrefresh_phase = NGX_CONF_UNSET_UINT;

static ngx_event_t  ngx_http_tokenrefresh_flush_event;
static ngx_connection_t  ngx_http_tokenrefresh_flush_conn;


static ngx_conf_bitmask_t  ngx_http_tokenrefresh_methods[] = {
    { ngx_string("GET"), NGX_HTTP_GET },
    { ngx_string("HEAD"), NGX_HTTP_HEAD },
    { ngx_string("POST"), NGX_HTTP_POST },
    { ngx_string("PUT"), NGX_HTTP_PUT },
    { ngx_string("DELETE"), NGX_HTTP_DELETE },
    { ngx_string("MKCOL"), NGX_HTTP_MKCOL },
    { ngx_string("COPY"), NGX_HTTP_COPY },
    { ngx_string("MOVE"), NGX_HTTP_MOVE },
    { ngx_string("OPTIONS"), NGX_HTTP_OPTIONS },
    { ngx_string("PROPFIND"), NGX_HTTP_PROPFIND },
    { ngx_string("PROPPATCH"), NGX_HTTP_PROPPATCH },
    { ngx_string("LOCK"), NGX_HTTP_LOCK },
    { ngx_string("UNLOCK"), NGX_HTTP_UNLOCK },
    { ngx_string("PATCH"), NGX_HTTP_PATCH },
    { ngx_null_string, 0 }
};


const char  *ngx_http_tokenrefresh_grant_names[] = {
    "fetch", "refresh", "login"
};


static ngx_conf_num_bounds_t  ngx_http_tokenrefresh_status_bounds = {
    ngx_conf_check_num_bounds, 400, 599
};

static char *ngx_http_tokenrefresh_positive_msec(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_tokenrefresh_positive_size(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_tokenrefresh_lifetime(ngx_conf_t *cf, void *post,
    void *data);

static ngx_conf_post_t  ngx_http_tokenrefresh_positive_msec_post = {
    ngx_http_tokenrefresh_positive_msec
};

static ngx_conf_post_t  ngx_http_tokenrefresh_positive_size_post = {
    ngx_http_tokenrefresh_positive_size
};

static ngx_conf_post_t  ngx_http_tokenrefresh_lifetime_post = {
    ngx_http_tokenrefresh_lifetime
};


static ngx_command_t  ngx_http_tokenrefresh_commands[] = {

    { ngx_string("tokenrefresh_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_tokenrefresh_zone,
      0,
      0,
      NULL },

    { ngx_string("tokenrefresh_seed"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE3,
      ngx_http_tokenrefresh_seed_directive,
      0,
      0,
      NULL },

    { ngx_string("tokenrefresh_client_assertion"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_tokenrefresh_client_assertion,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_tokenrefresh,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_refresh"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_tokenrefresh_uri,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, refresh_uri),
      NULL },

    { ngx_string("tokenrefresh_login"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_tokenrefresh_uri,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, login_uri),
      NULL },

    { ngx_string("tokenrefresh_ahead"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, ahead),
      NULL },

    { ngx_string("tokenrefresh_wait_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, wait_timeout),
      &ngx_http_tokenrefresh_positive_msec_post },

    { ngx_string("tokenrefresh_refresh_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, refresh_timeout),
      &ngx_http_tokenrefresh_positive_msec_post },

    { ngx_string("tokenrefresh_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_tokenrefresh_backoff,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_deny_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, deny_status),
      &ngx_http_tokenrefresh_status_bounds },

    { ngx_string("tokenrefresh_failure_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_tokenrefresh_failure_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_rejected_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_tokenrefresh_rejected_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_replay"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, replay),
      NULL },

    { ngx_string("tokenrefresh_replay_methods"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_bitmask_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, replay_methods),
      &ngx_http_tokenrefresh_methods },

    { ngx_string("tokenrefresh_min_token_age"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, min_token_age),
      NULL },

    { ngx_string("tokenrefresh_rotating"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, rotating),
      NULL },

    { ngx_string("tokenrefresh_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_ANY,
      ngx_http_tokenrefresh_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_json_access_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_tokenrefresh_json,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, format.access),
      NULL },

    { ngx_string("tokenrefresh_json_refresh_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_tokenrefresh_json,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, format.refresh),
      NULL },

    { ngx_string("tokenrefresh_json_expires_in"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_tokenrefresh_json,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, format.expires_in),
      NULL },

    { ngx_string("tokenrefresh_json_expires_at"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_tokenrefresh_json,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, format.expires_at),
      NULL },

    { ngx_string("tokenrefresh_default_lifetime"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t,
               format.default_lifetime),
      &ngx_http_tokenrefresh_lifetime_post },

    { ngx_string("tokenrefresh_max_response_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t,
               format.max_response_size),
      &ngx_http_tokenrefresh_positive_size_post },

    { ngx_string("tokenrefresh_session"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_tokenrefresh_session_zone_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_TOKENREFRESH_SESSION_USE,
      NULL },

    { ngx_string("tokenrefresh_session_login"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_tokenrefresh_session_zone_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_TOKENREFRESH_SESSION_LOGIN,
      NULL },

    { ngx_string("tokenrefresh_session_logout"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_tokenrefresh_session_zone_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_TOKENREFRESH_SESSION_LOGOUT,
      NULL },

    { ngx_string("tokenrefresh_session_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_tokenrefresh_session_cookie_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_session_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, session_conf.header),
      NULL },

    { ngx_string("tokenrefresh_session_handle_json"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, session_conf.handle_json),
      NULL },

    { ngx_string("tokenrefresh_session_handle_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t,
               session_conf.handle_header),
      NULL },

    { ngx_string("tokenrefresh_session_keep"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_tokenrefresh_session_keep_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_session_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_tokenrefresh_session_origins_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tokenrefresh_session_csrf_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, session_conf.csrf_header),
      NULL },

    { ngx_string("tokenrefresh_session_ended_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_tokenrefresh_loc_conf_t, session_conf.ended_status),
      &ngx_http_tokenrefresh_status_bounds },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_tokenrefresh_module_ctx = {
    ngx_http_tokenrefresh_preconfiguration, /* preconfiguration */
    ngx_http_tokenrefresh_postconfiguration, /* postconfiguration */

    ngx_http_tokenrefresh_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_tokenrefresh_create_loc_conf, /* create location configuration */
    ngx_http_tokenrefresh_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_tokenrefresh_module = {
    NGX_MODULE_V1,
    &ngx_http_tokenrefresh_module_ctx,     /* module context */
    ngx_http_tokenrefresh_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_tokenrefresh_init_module,     /* init module */
    ngx_http_tokenrefresh_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_tokenrefresh_exit_process,    /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The attach step runs in the precontent phase: after every access
 * handler (allow/deny, auth_basic, auth_request, satisfy) has decided, so
 * the module can neither grant access nor log in on behalf of a request
 * that nginx is about to refuse.  A dynamic module's access handler would
 * run before the core ones, and returning NGX_OK there under "satisfy any"
 * would skip them.
 *
 * A replay comes back to this handler, in the same location, without the
 * phases before it (ngx_http_tokenrefresh_replay.c); once it has its
 * token it goes straight to the content phase: try_files and mirror, whose
 * handlers run after this one in the same phase, did their work for the
 * first attempt and must not do it twice.
 */

static ngx_int_t
ngx_http_tokenrefresh_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_http_tokenrefresh_ctx_t       *ctx;
    ngx_http_tokenrefresh_acquire_t    res;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    if (tlcf->shm_zone == NULL) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module);

    if (ctx == NULL) {
        ctx = ngx_http_tokenrefresh_get_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc = ngx_http_tokenrefresh_new_pass(r, ctx, tlcf);

        if (rc == NGX_DECLINED) {
            ctx->outcome = NGX_HTTP_TOKENREFRESH_R_ENDED;
            return ngx_http_tokenrefresh_session_ended(r, tlcf);
        }

        if (rc != NGX_OK) {
            return rc;
        }

    } else if (ctx->attached) {
        return ngx_http_tokenrefresh_next(ctx);
    }

    if (ctx->waiting && ngx_current_msec >= ctx->wait_deadline) {
        ngx_http_tokenrefresh_account_wait(ctx, 1);
        ctx->outcome = NGX_HTTP_TOKENREFRESH_R_FAILED;

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "tokenrefresh: gave up waiting for a token of "
                      "credential \"%V\" after %M ms",
                      &ctx->log_name, ctx->waited);

        /* the token is still on its way: come back soon */

        if (ngx_http_tokenrefresh_set_retry_after(r, 1000) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return tlcf->timeout_status;
    }

    rc = ngx_http_tokenrefresh_acquire(ctx, tlcf, &res);
    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->touch) {
        ctx->touch = 0;
        (void) ngx_http_tokenrefresh_journal_put(ctx->zone, &ctx->name, 1,
                                                 NULL, NULL, NULL,
                                                 r->connection->log);
    }

    ctx->ref = res.ref;
    ctx->seq = res.seq;

    switch (res.action) {

    case NGX_HTTP_TOKENREFRESH_USE:
        ngx_http_tokenrefresh_attach(ctx, &res);
        return ngx_http_tokenrefresh_next(ctx);

    case NGX_HTTP_TOKENREFRESH_USE_AND_FETCH:

        /*
         * refresh ahead of expiry: the current token still serves this
         * request; the refresh is the worker's, this request goes on
         */

        ngx_http_tokenrefresh_attach(ctx, &res);

        (void) ngx_http_tokenrefresh_start(r, ctx, &res, tlcf);

        return ngx_http_tokenrefresh_next(ctx);

    case NGX_HTTP_TOKENREFRESH_FETCH:

        if (ngx_http_tokenrefresh_keep_ctx(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_tokenrefresh_wait_begin(ctx, tlcf);

        if (ngx_http_tokenrefresh_start(r, ctx, &res, tlcf) != NGX_OK) {

            /* no connection left, no memory: the worker is overloaded */

            ngx_http_tokenrefresh_account_wait(ctx, 1);
            ctx->outcome = NGX_HTTP_TOKENREFRESH_R_FAILED;

            if (ngx_http_tokenrefresh_set_retry_after(r, 1000) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return tlcf->failure_status;
        }

        ctx->leader = 1;

        goto park;

    case NGX_HTTP_TOKENREFRESH_WAIT:

        if (ngx_http_tokenrefresh_keep_ctx(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_tokenrefresh_wait_begin(ctx, tlcf);

        goto park;

    case NGX_HTTP_TOKENREFRESH_NOMEM:
        ctx->outcome = NGX_HTTP_TOKENREFRESH_R_FAILED;
        return NGX_HTTP_SERVICE_UNAVAILABLE;

    case NGX_HTTP_TOKENREFRESH_ENDED:

        /* unknown here: the fleet may know it (another node's login) */

        rc = ngx_http_tokenrefresh_fleet_session_find(r, ctx);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (rc == NGX_BUSY) {
            ctx->outcome = NGX_HTTP_TOKENREFRESH_R_FAILED;

            if (ngx_http_tokenrefresh_set_retry_after(r, 1000) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        if (ctx->waiting) {
            ngx_http_tokenrefresh_account_wait(ctx, 0);
        }

        ctx->outcome = NGX_HTTP_TOKENREFRESH_R_ENDED;

        return ngx_http_tokenrefresh_session_ended(r, tlcf);

    default: /* NGX_HTTP_TOKENREFRESH_FAIL, counted by the store */

        if (ctx->waiting) {
            ngx_http_tokenrefresh_account_wait(ctx, 0);
        }

        ctx->outcome = NGX_HTTP_TOKENREFRESH_R_FAILED;

        if (res.retry_after
            && ngx_http_tokenrefresh_set_retry_after(r, res.retry_after)
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return res.status;
    }

park:

    rc = ngx_http_tokenrefresh_park(r, ctx);

    if (rc != NGX_AGAIN) {
        ngx_http_tokenrefresh_account_wait(ctx, 1);
    }

    return rc;
}


/* on to try_files and mirror, or, for a replay, straight to content */

static ngx_int_t
ngx_http_tokenrefresh_next(ngx_http_tokenrefresh_ctx_t *ctx)
{
    return ctx->replaying ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_http_tokenrefresh_new_pass(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   name;

    /*
     * the first run of the handler in this location: the request is new,
     * or came here by an internal redirect (an error_page, an
     * X-Accel-Redirect), which may have changed the credential
     */

    ngx_http_set_ctx(r, ctx, ngx_http_tokenrefresh_module);

    ctx->lcf = tlcf;
    ctx->zone = tlcf->shm_zone->data;

    /* what a replay restores: the 401 may have come with a limit_rate */

    ctx->limit_rate = r->limit_rate;
    ctx->limit_rate_set = r->limit_rate_set;

    if (tlcf->session == NGX_HTTP_TOKENREFRESH_SESSION_USE) {
        return ngx_http_tokenrefresh_session_pass(r, ctx, tlcf);
    }

    if (tlcf->credential->lengths == NULL) {
        /* a fixed name: no evaluation, the hash was computed once */
        ctx->name = tlcf->credential->value;
        ctx->log_name = tlcf->credential_log;
        ctx->hash = tlcf->credential_hash;
        return NGX_OK;
    }

    if (ngx_http_complex_value(r, tlcf->credential, &name) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (name.len == 0 || name.len > NGX_HTTP_TOKENREFRESH_MAX_NAME) {

        /*
         * the name may come from client input: no name means no
         * credential, and never a login
         */

        ctx->outcome = NGX_HTTP_TOKENREFRESH_R_DENIED;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "tokenrefresh: %s credential name, request denied",
                      name.len ? "too long" : "empty");

        return tlcf->deny_status;
    }

    ctx->name = name;
    ctx->hash = ngx_crc32_short(name.data, name.len);

    /* a name from client input is shown escaped */

    len = ngx_http_tokenrefresh_printable_len(name.data, name.len);

    if (len == name.len) {
        ctx->log_name = name;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->log_name.data = p;
    ctx->log_name.len = ngx_http_tokenrefresh_printable(p, name.data,
                                                        name.len) - p;

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_attach(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_acquire_t *res)
{
    ngx_uint_t  waited;

    ctx->authorization = res->token;
    ctx->token.data = res->token.data + NGX_HTTP_TOKENREFRESH_BEARER_LEN;
    ctx->token.len = res->token.len - NGX_HTTP_TOKENREFRESH_BEARER_LEN;
    ctx->generation = res->generation;
    ctx->attached = 1;

    waited = ctx->waiting;

    if (waited) {
        ngx_http_tokenrefresh_account_wait(ctx, 0);
    }

    if (ctx->replayed) {
        ctx->outcome = NGX_HTTP_TOKENREFRESH_R_REPLAYED;

    } else if (waited) {
        ctx->outcome = ctx->leader ? NGX_HTTP_TOKENREFRESH_R_REFRESHED
                                   : NGX_HTTP_TOKENREFRESH_R_WAITED;

    } else {
        ctx->outcome = NGX_HTTP_TOKENREFRESH_R_HIT;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                   "tokenrefresh: credential \"%V\" attached, "
                   "generation %ui, waited %M ms",
                   &ctx->log_name, ctx->generation, ctx->waited);
}


ngx_int_t
ngx_http_tokenrefresh_set_retry_after(ngx_http_request_t *r,
    ngx_msec_t delay)
{
    ngx_str_t  value;

    value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (value.data == NULL) {
        return NGX_ERROR;
    }

    value.len = ngx_sprintf(value.data, "%M", (delay + 999) / 1000)
                - value.data;

    return ngx_http_tokenrefresh_add_header_out(r, "Retry-After", &value);
}


/* a response header the module adds; key is a constant string */

ngx_int_t
ngx_http_tokenrefresh_add_header_out(ngx_http_request_t *r, char *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}


/*
 * Internal redirects zero r->ctx; the state of a client request (whether
 * it was replayed, how long it waited) must survive them, so the context
 * is also reachable from its pool cleanup, as the realip module does.
 */

ngx_http_tokenrefresh_ctx_t *
ngx_http_tokenrefresh_find_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_tokenrefresh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module);

    if (ctx == NULL && (r->internal || r->filter_finalize)) {
        for (cln = r->pool->cleanup; cln; cln = cln->next) {
            if (cln->handler == ngx_http_tokenrefresh_cleanup) {
                return cln->data;
            }
        }
    }

    return ctx;
}


/* the caller found no context in r->ctx */

static ngx_http_tokenrefresh_ctx_t *
ngx_http_tokenrefresh_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_tokenrefresh_ctx_t  *ctx;

    if (r->internal || r->filter_finalize) {
        for (cln = r->pool->cleanup; cln; cln = cln->next) {
            if (cln->handler != ngx_http_tokenrefresh_cleanup) {
                continue;
            }

            /*
             * the context of a pass before an internal redirect: a
             * rejection that an error_page brought here is recorded, and
             * what that pass had attached is forgotten
             */

            ctx = cln->data;

            ngx_http_tokenrefresh_record(ctx);

            ctx->attached = 0;
            ctx->sent = 0;
            ctx->leader = 0;
            ctx->replaying = 0;
            ctx->recorded = 0;
            ctx->upstream = NULL;
            ctx->token.len = 0;

            return ctx;
        }
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_tokenrefresh_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request = r;

    return ctx;
}


/*
 * Most requests neither wait nor get replayed: only those that do need
 * their context to survive the request's end (to be unparked) or an
 * internal redirect (to be found again), and pay for a pool cleanup.
 */

ngx_int_t
ngx_http_tokenrefresh_keep_ctx(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    if (ctx->kept) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_tokenrefresh_cleanup;
    cln->data = ctx;

    ctx->kept = 1;

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_cleanup(void *data)
{
    ngx_http_tokenrefresh_ctx_t  *ctx = data;

    /*
     * the request is being freed, right after its log phase: a rejection
     * an error_page intercepted is recorded here, where every request
     * that may have one passes, and no other request pays for it
     */

    ngx_http_tokenrefresh_record(ctx);

    ngx_http_tokenrefresh_unpark(ctx);

    /* a client that went away while waiting */

    if (ctx->waiting) {
        ngx_http_tokenrefresh_account_wait(ctx, 0);
    }
}


int64_t
ngx_http_tokenrefresh_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


/*
 * A credential name may come from client input and hold any byte.  Where
 * it is shown (the error log, the status page) bytes that are neither
 * printable ASCII nor part of a valid UTF-8 character, and the quote and
 * backslash, are written \xHH: every line stays valid UTF-8 text, and
 * nothing can be forged in it.
 */

size_t
ngx_http_tokenrefresh_printable_len(u_char *src, size_t len)
{
    u_char  *p, *q, *last;
    size_t   n;

    n = 0;
    last = src + len;

    for (p = src; p < last; /* void */) {

        if (ngx_http_tokenrefresh_plain(*p)) {
            n++;
            p++;
            continue;
        }

        q = p;

        if (*p >= 0x80 && ngx_utf8_decode(&q, last - p) < 0x110000
            && q - p > 1 && ngx_http_tokenrefresh_utf8_shown(p))
        {
            n += q - p;
            p = q;
            continue;
        }

        n += 4;
        p++;
    }

    return n;
}


u_char *
ngx_http_tokenrefresh_printable(u_char *dst, u_char *src, size_t len)
{
    u_char  *p, *q, *last;

    static u_char  hex[] = "0123456789abcdef";

    last = src + len;

    for (p = src; p < last; /* void */) {

        if (ngx_http_tokenrefresh_plain(*p)) {
            *dst++ = *p++;
            continue;
        }

        q = p;

        if (*p >= 0x80 && ngx_utf8_decode(&q, last - p) < 0x110000
            && q - p > 1 && ngx_http_tokenrefresh_utf8_shown(p))
        {
            dst = ngx_cpymem(dst, p, q - p);
            p = q;
            continue;
        }

        *dst++ = '\\';
        *dst++ = 'x';
        *dst++ = hex[*p >> 4];
        *dst++ = hex[*p & 0xf];
        p++;
    }

    return dst;
}


static void *
ngx_http_tokenrefresh_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_tokenrefresh_main_conf_t  *tmcf;

    tmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_tokenrefresh_main_conf_t));
    if (tmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&tmcf->zone_refs, cf->pool, 4,
                       sizeof(ngx_http_tokenrefresh_zone_ref_t))
        != NGX_OK
        || ngx_array_init(&tmcf->fixed, cf->pool, 4,
                          sizeof(ngx_http_tokenrefresh_loc_conf_t *))
           != NGX_OK)
    {
        return NULL;
    }

    ngx_str_set(&tmcf->access_token.text, "/access_token");
    ngx_str_set(&tmcf->refresh_token.text, "/refresh_token");
    ngx_str_set(&tmcf->expires_in.text, "/expires_in");
    ngx_str_set(&tmcf->error.text, "/error");

    if (ngx_http_tokenrefresh_compile_pointer(cf->pool, &tmcf->access_token)
        != NGX_OK
        || ngx_http_tokenrefresh_compile_pointer(cf->pool,
                                                 &tmcf->refresh_token)
           != NGX_OK
        || ngx_http_tokenrefresh_compile_pointer(cf->pool, &tmcf->expires_in)
           != NGX_OK
        || ngx_http_tokenrefresh_compile_pointer(cf->pool, &tmcf->error)
           != NGX_OK)
    {
        return NULL;
    }

    return tmcf;
}


static void *
ngx_http_tokenrefresh_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_tokenrefresh_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_tokenrefresh_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->refresh_uri = { 0, NULL };
     *     conf->refresh_args = { 0, NULL };
     *     conf->login_uri = { 0, NULL };
     *     conf->login_args = { 0, NULL };
     *     conf->credential = NULL;
     */

    conf->shm_zone = NGX_CONF_UNSET_PTR;
    conf->ahead = NGX_CONF_UNSET_MSEC;
    conf->wait_timeout = NGX_CONF_UNSET_MSEC;
    conf->refresh_timeout = NGX_CONF_UNSET_MSEC;
    conf->backoff_min = NGX_CONF_UNSET_MSEC;
    conf->backoff_max = NGX_CONF_UNSET_MSEC;
    conf->deny_status = NGX_CONF_UNSET_UINT;
    conf->failure_status = NGX_CONF_UNSET_UINT;
    conf->timeout_status = NGX_CONF_UNSET_UINT;
    conf->rejected = NGX_CONF_UNSET_PTR;
    conf->replay = NGX_CONF_UNSET;
    conf->rotating = NGX_CONF_UNSET;
    conf->min_token_age = NGX_CONF_UNSET_MSEC;

    conf->status = NGX_CONF_UNSET_UINT;
    conf->assertion = NGX_CONF_UNSET_PTR;

    conf->keep = NGX_CONF_UNSET_PTR;
    conf->session_conf.origins = NGX_CONF_UNSET_PTR;
    conf->session_conf.ended_status = NGX_CONF_UNSET_UINT;

    conf->format.access = NGX_CONF_UNSET_PTR;
    conf->format.refresh = NGX_CONF_UNSET_PTR;
    conf->format.expires_in = NGX_CONF_UNSET_PTR;
    conf->format.expires_at = NGX_CONF_UNSET_PTR;
    conf->format.expires_at_msec = NGX_CONF_UNSET;
    conf->format.default_lifetime = NGX_CONF_UNSET_MSEC;
    conf->format.max_response_size = NGX_CONF_UNSET_SIZE;

    return conf;
}


static char *
ngx_http_tokenrefresh_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_tokenrefresh_loc_conf_t *prev = parent;
    ngx_http_tokenrefresh_loc_conf_t *conf = child;

    ngx_http_tokenrefresh_loc_conf_t   **fixed;
    ngx_http_tokenrefresh_main_conf_t   *tmcf;

    if (conf->session == NGX_HTTP_TOKENREFRESH_SESSION_LOGIN
        || conf->session == NGX_HTTP_TOKENREFRESH_SESSION_LOGOUT)
    {
        /* a login or logout location uses no token of its own */
        conf->shm_zone = NULL;
    }

    if (conf->shm_zone == NGX_CONF_UNSET_PTR) {
        conf->shm_zone = prev->shm_zone;
        conf->session = prev->session;
        conf->credential = prev->credential;
        conf->credential_hash = prev->credential_hash;
        conf->credential_log = prev->credential_log;
        conf->file = prev->file;
        conf->line = prev->line;
    }

    if (conf->shm_zone == NGX_CONF_UNSET_PTR) {
        conf->shm_zone = NULL;
    }

    if (conf->refresh_uri.data == NULL) {
        conf->refresh_uri = prev->refresh_uri;
        conf->refresh_args = prev->refresh_args;
    }

    if (conf->login_uri.data == NULL) {
        conf->login_uri = prev->login_uri;
        conf->login_args = prev->login_args;
    }

    ngx_conf_merge_msec_value(conf->ahead, prev->ahead, 60000);
    ngx_conf_merge_msec_value(conf->wait_timeout, prev->wait_timeout, 10000);
    ngx_conf_merge_msec_value(conf->refresh_timeout, prev->refresh_timeout,
                              10000);
    ngx_conf_merge_msec_value(conf->backoff_min, prev->backoff_min, 1000);
    ngx_conf_merge_msec_value(conf->backoff_max, prev->backoff_max, 60000);
    ngx_conf_merge_uint_value(conf->deny_status, prev->deny_status,
                              NGX_HTTP_FORBIDDEN);

    ngx_conf_merge_uint_value(conf->failure_status, prev->failure_status,
                              NGX_HTTP_BAD_GATEWAY);
    ngx_conf_merge_uint_value(conf->timeout_status, prev->timeout_status,
                              NGX_HTTP_GATEWAY_TIME_OUT);

    ngx_conf_merge_ptr_value(conf->assertion, prev->assertion, NULL);

    /* NULL: 401 only */
    ngx_conf_merge_ptr_value(conf->rejected, prev->rejected, NULL);
    ngx_conf_merge_value(conf->replay, prev->replay, 1);
    ngx_conf_merge_value(conf->rotating, prev->rotating, 1);
    ngx_conf_merge_bitmask_value(conf->replay_methods, prev->replay_methods,
                                 (NGX_CONF_BITMASK_SET|~(ngx_uint_t) 0));

    /* a revoked token is recovered at any age: the loop guard is enough */
    ngx_conf_merge_msec_value(conf->min_token_age, prev->min_token_age, 0);

    if (ngx_http_tokenrefresh_session_merge(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (conf->shm_zone && conf->session == NGX_HTTP_TOKENREFRESH_SESSION_USE)
    {
        /* a session without a refresh location ends with its token */

    } else if (conf->shm_zone && conf->credential->lengths == NULL) {

        /* its hits are added to the credential now and then */

        tmcf = ngx_http_conf_get_module_main_conf(cf,
                                                ngx_http_tokenrefresh_module);

        fixed = ngx_array_push(&tmcf->fixed);
        if (fixed == NULL) {
            return NGX_CONF_ERROR;
        }

        *fixed = conf;
    }

    if (conf->shm_zone
        && conf->session != NGX_HTTP_TOKENREFRESH_SESSION_USE
        && conf->refresh_uri.data == NULL
        && conf->login_uri.data == NULL)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"tokenrefresh\" in %s:%ui needs "
                      "\"tokenrefresh_login\" or \"tokenrefresh_refresh\" "
                      "in the same or an enclosing block",
                      conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    /*
     * the response format stays unset unless configured, so that a token
     * location can tell its own settings from inherited ones: see
     * ngx_http_tokenrefresh_resolve_format()
     */

    ngx_conf_merge_ptr_value(conf->format.access, prev->format.access,
                             NGX_CONF_UNSET_PTR);
    ngx_conf_merge_ptr_value(conf->format.refresh, prev->format.refresh,
                             NGX_CONF_UNSET_PTR);
    ngx_conf_merge_ptr_value(conf->format.expires_in,
                             prev->format.expires_in, NGX_CONF_UNSET_PTR);
    ngx_conf_merge_ptr_value(conf->format.expires_at,
                             prev->format.expires_at, NGX_CONF_UNSET_PTR);
    ngx_conf_merge_value(conf->format.expires_at_msec,
                         prev->format.expires_at_msec, NGX_CONF_UNSET);
    ngx_conf_merge_msec_value(conf->format.default_lifetime,
                              prev->format.default_lifetime,
                              NGX_CONF_UNSET_MSEC);
    ngx_conf_merge_size_value(conf->format.max_response_size,
                              prev->format.max_response_size,
                              NGX_CONF_UNSET_SIZE);

    return NGX_CONF_OK;
}


static char *
ngx_http_tokenrefresh_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char                        *p;
    size_t                         size, max_token;
    ngx_int_t                      redis_db, replicas;
    ngx_str_t                     *value, name, s, state, key, redis,
                                   redis_password, prefix, old_key;
    ngx_uint_t                     i;
    ngx_list_part_t               *part;
    ngx_msec_t                     idle, lifetime, t;
    ngx_shm_zone_t                *shm_zone, *shm;
    ngx_http_tokenrefresh_zone_t  *zone, *other;

    value = cf->args->elts;

    p = (u_char *) ngx_strchr(value[1].data, ':');

    if (p == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected name:size",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone name in \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == (size_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (size_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small", &value[1]);
        return NGX_CONF_ERROR;
    }

    max_token = 16 * 1024;
    ngx_str_null(&state);
    ngx_str_null(&key);
    ngx_str_null(&old_key);
    ngx_str_null(&redis);
    ngx_str_null(&redis_password);
    ngx_str_null(&prefix);
    redis_db = 0;
    replicas = 0;
    idle = 86400000;
    lifetime = 30 * (ngx_msec_t) 86400000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "state=", 6) == 0) {
            state.data = value[i].data + 6;
            state.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {

            /* a second key opens, never seals: a key being rotated */

            if (key.len && old_key.len) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "at most two \"key=\": the one that "
                                   "seals, and one that opens too");
                return NGX_CONF_ERROR;
            }

            if (key.len) {
                old_key.data = value[i].data + 4;
                old_key.len = value[i].len - 4;
                continue;
            }

            key.data = value[i].data + 4;
            key.len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "session_idle=", 13) == 0
            || ngx_strncmp(value[i].data, "session_lifetime=", 17) == 0)
        {
            s.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            s.len = value[i].data + value[i].len - s.data;

            t = ngx_parse_time(&s, 0);

            if (t == (ngx_msec_t) NGX_ERROR || t < 1000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\": a time of 1s or more "
                                   "is expected", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (value[i].data[8] == 'i') {
                idle = t;

            } else {
                lifetime = t;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis_password_file=", 20) == 0) {
            s.data = value[i].data + 20;
            s.len = value[i].len - 20;

            if (ngx_http_tokenrefresh_read_secret(cf, &s, &redis_password)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis_replicas=", 15) == 0) {
            replicas = ngx_atoi(value[i].data + 15, value[i].len - 15);

            if (replicas == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis_db=", 9) == 0) {
            redis_db = ngx_atoi(value[i].data + 9, value[i].len - 9);

            if (redis_db == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis_prefix=", 13) == 0) {
            prefix.data = value[i].data + 13;
            prefix.len = value[i].len - 13;

            if (prefix.len == 0
                || prefix.len > NGX_HTTP_TOKENREFRESH_PREFIX_MAX)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"redis_prefix=\" must have 1 to %d "
                                   "bytes", NGX_HTTP_TOKENREFRESH_PREFIX_MAX);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {

            if (redis.len) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"redis=\" is duplicate");
                return NGX_CONF_ERROR;
            }

            redis.data = value[i].data + 6;
            redis.len = value[i].len - 6;

            if (ngx_http_tokenrefresh_redis_addr(cf, &redis) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_token_size=", 15) == 0) {

            s.data = value[i].data + 15;
            s.len = value[i].len - 15;

            max_token = ngx_parse_size(&s);

            if (max_token == (size_t) NGX_ERROR || max_token < 64) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid max_token_size \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (max_token > size / 8) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "max_token_size=%uz does not leave room for "
                           "several credentials in zone \"%V\" of %uz bytes",
                           max_token, &name, size);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_tokenrefresh_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->max_token_size = max_token;
    zone->session_idle = idle;
    zone->session_lifetime = lifetime;
    zone->redis_addr = redis;
    zone->redis_password = redis_password;
    zone->redis_db = redis_db;

    if (redis.len == 0
        && (redis_password.len || redis_db || prefix.len || replicas))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"redis_password_file=\", \"redis_db=\", "
                           "\"redis_prefix=\" and \"redis_replicas=\" "
                           "need \"redis=\"");
        return NGX_CONF_ERROR;
    }

    zone->redis_replicas = replicas;

    /*
     * what goes to the fleet is sealed under the zone's key, the same on
     * every node; and a node restarted must not start from nothing
     */

    if (redis.len && state.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"redis=\" needs \"state=\" and \"key=\": "
                           "the fleet's records are sealed under the "
                           "zone's key, the same on every node");
        return NGX_CONF_ERROR;
    }

    if (redis.len && prefix.len == 0) {
        prefix.len = sizeof("tokenrefresh::") - 1 + name.len;
        prefix.data = ngx_pnalloc(cf->pool, prefix.len);
        if (prefix.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(prefix.data, "tokenrefresh:%V:", &name);
    }

    zone->redis_prefix = prefix;

    if (redis.len) {
        zone->redis_channel.len = prefix.len + sizeof("gen") - 1;
        zone->redis_channel.data = ngx_pnalloc(cf->pool,
                                               zone->redis_channel.len);
        if (zone->redis_channel.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(zone->redis_channel.data, "%Vgen", &prefix);

        zone->redis_marker.len = prefix.len + sizeof("marker") - 1;
        zone->redis_marker.data = ngx_pnalloc(cf->pool,
                                              zone->redis_marker.len);
        if (zone->redis_marker.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(zone->redis_marker.data, "%Vmarker", &prefix);

        zone->redis_settling.len = prefix.len + sizeof("settling") - 1;
        zone->redis_settling.data = ngx_pnalloc(cf->pool,
                                                zone->redis_settling.len);
        if (zone->redis_settling.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(zone->redis_settling.data, "%Vsettling", &prefix);
    }

    if ((state.len == 0) != (key.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"state=\" and \"key=\" go together: the state "
                           "file holds secrets and is always encrypted");
        return NGX_CONF_ERROR;
    }

    if (state.len
        && ngx_http_tokenrefresh_state_conf(cf, zone, &state, &key,
                                            &old_key)
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* two zones writing one file would overwrite each other's tokens */

    part = &cf->cycle->shared_memory.part;
    shm = part->elts;

    for (i = 0; zone->state; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm = part->elts;
            i = 0;
        }

        other = shm[i].data;

        if (shm[i].tag == &ngx_http_tokenrefresh_module
            && other && other->state
            && other->state->real.len == zone->state->real.len
            && ngx_strncmp(other->state->real.data, zone->state->real.data,
                           zone->state->real.len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "zone \"%V\" already uses the state file "
                               "\"%V\"", &shm[i].shm.name,
                               &zone->state->path);
            return NGX_CONF_ERROR;
        }

        /* nor may two zones share a fleet's keys and leases */

        if (shm[i].tag == &ngx_http_tokenrefresh_module
            && other && zone->redis_addr.len
            && other->redis_addr.len == zone->redis_addr.len
            && ngx_strncmp(other->redis_addr.data, zone->redis_addr.data,
                           zone->redis_addr.len)
               == 0
            && other->redis_db == zone->redis_db
            && other->redis_prefix.len == zone->redis_prefix.len
            && ngx_strncmp(other->redis_prefix.data, zone->redis_prefix.data,
                           zone->redis_prefix.len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "zone \"%V\" already uses redis \"%V\" with "
                               "the prefix \"%V\": give this one another "
                               "\"redis_prefix=\"", &shm[i].shm.name,
                               &zone->redis_addr, &zone->redis_prefix);
            return NGX_CONF_ERROR;
        }
    }

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_tokenrefresh_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    zone->shm_zone = shm_zone;

    if (zone->state
        && ngx_http_tokenrefresh_state_name(cf, zone, &name) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_tokenrefresh_init_zone;
    shm_zone->data = zone;

    zone->channel = ngx_http_tokenrefresh_handover_conf(cf);
    if (zone->channel == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* tokenrefresh_seed zone credential file */

static char *
ngx_http_tokenrefresh_seed_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t                     *value;
    const char                    *err;
    ngx_shm_zone_t                *shm_zone;
    ngx_http_tokenrefresh_seed_t  *seed;
    ngx_http_tokenrefresh_zone_t  *zone;

    value = cf->args->elts;

    shm_zone = ngx_shared_memory_add(cf, &value[1], 0,
                                     &ngx_http_tokenrefresh_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone = shm_zone->data;

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" must be declared with "
                           "\"tokenrefresh_zone\" before its seeds",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[2].len == 0 || value[2].len > NGX_HTTP_TOKENREFRESH_MAX_NAME) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid credential name \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (zone->seeds == NULL) {
        zone->seeds = ngx_array_create(cf->pool, 2,
                                       sizeof(ngx_http_tokenrefresh_seed_t));
        if (zone->seeds == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    seed = ngx_array_push(zone->seeds);
    if (seed == NULL) {
        return NGX_CONF_ERROR;
    }

    seed->name = value[2];
    seed->file = value[3];

    if (ngx_http_tokenrefresh_read_secret(cf, &seed->file, &seed->token)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    err = ngx_http_tokenrefresh_check_token(&seed->token,
                                            zone->max_token_size);
    if (err) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" does not hold a refresh token: %s",
                           &seed->file, err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * tokenrefresh_client_assertion alg=RS256|ES256|HS256
 *     key=file | secret=file  client_id=id  audience=url
 *     [kid=id] [lifetime=time]
 */

static char *
ngx_http_tokenrefresh_client_assertion(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_str_t                          *value, key, secret, s;
    ngx_uint_t                          i;
    ngx_http_tokenrefresh_assertion_t  *a;

    if (tlcf->assertion != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    a = ngx_pcalloc(cf->pool, sizeof(ngx_http_tokenrefresh_assertion_t));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    a->alg = NGX_CONF_UNSET_UINT;
    a->lifetime = 60000;
    ngx_str_null(&key);
    ngx_str_null(&secret);

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "alg=RS256") == 0) {
            a->alg = NGX_HTTP_TOKENREFRESH_RS256;

        } else if (ngx_strcmp(value[i].data, "alg=ES256") == 0) {
            a->alg = NGX_HTTP_TOKENREFRESH_ES256;

        } else if (ngx_strcmp(value[i].data, "alg=HS256") == 0) {
            a->alg = NGX_HTTP_TOKENREFRESH_HS256;

        } else if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            key.data = value[i].data + 4;
            key.len = value[i].len - 4;

        } else if (ngx_strncmp(value[i].data, "secret=", 7) == 0) {
            secret.data = value[i].data + 7;
            secret.len = value[i].len - 7;

        } else if (ngx_strncmp(value[i].data, "client_id=", 10) == 0) {
            a->client_id.data = value[i].data + 10;
            a->client_id.len = value[i].len - 10;

        } else if (ngx_strncmp(value[i].data, "audience=", 9) == 0) {
            a->audience.data = value[i].data + 9;
            a->audience.len = value[i].len - 9;

        } else if (ngx_strncmp(value[i].data, "kid=", 4) == 0) {
            a->kid.data = value[i].data + 4;
            a->kid.len = value[i].len - 4;

        } else if (ngx_strncmp(value[i].data, "lifetime=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            a->lifetime = ngx_parse_time(&s, 0);

            if (a->lifetime == (ngx_msec_t) NGX_ERROR
                || a->lifetime < 1000 || a->lifetime > 3600000)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid lifetime \"%V\", from 1s to 1h "
                                   "is expected", &s);
                return NGX_CONF_ERROR;
            }

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (a->alg == NGX_CONF_UNSET_UINT || a->client_id.len == 0
        || a->audience.len == 0)
    {
        return "needs alg=, client_id= and audience=";
    }

    if (a->alg == NGX_HTTP_TOKENREFRESH_HS256) {
        if (secret.len == 0 || key.len) {
            return "with alg=HS256 needs secret=file, not key=";
        }

        if (ngx_http_tokenrefresh_read_secret(cf, &secret, &a->secret)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (a->secret.len < 32) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the HS256 secret \"%V\" is shorter than 32 "
                               "bytes (RFC 7518, section 3.2)", &secret);
            return NGX_CONF_ERROR;
        }

    } else {
        if (key.len == 0 || secret.len) {
            return "with alg=RS256 or alg=ES256 needs key=file, not secret=";
        }

        if (ngx_http_tokenrefresh_assertion_key(cf, a, &key)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    tlcf->assertion = a;

    return NGX_CONF_OK;
}


static char *
ngx_http_tokenrefresh(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_str_t                          *value;
    ngx_http_compile_complex_value_t    ccv;

    if (tlcf->shm_zone != NGX_CONF_UNSET_PTR) {
        return "is duplicate, or beside \"tokenrefresh_session\"";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "off") == 0) {
            tlcf->shm_zone = NULL;
            return NGX_CONF_OK;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected a zone and "
                           "a credential name, or \"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    tlcf->shm_zone = ngx_http_tokenrefresh_use_zone(cf, &value[1]);
    if (tlcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    tlcf->file = cf->conf_file->file.name.data;
    tlcf->line = cf->conf_file->line;

    if (value[2].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty credential name");
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = ngx_palloc(cf->pool,
                                   sizeof(ngx_http_complex_value_t));
    if (ccv.complex_value == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    tlcf->credential = ccv.complex_value;

    if (tlcf->credential->lengths == NULL) {
        if (value[2].len > NGX_HTTP_TOKENREFRESH_MAX_NAME) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "credential name \"%V\" is longer than %d "
                               "bytes", &value[2],
                               NGX_HTTP_TOKENREFRESH_MAX_NAME);
            return NGX_CONF_ERROR;
        }

        tlcf->credential_hash = ngx_crc32_short(value[2].data, value[2].len);

        tlcf->credential_log.data = ngx_pnalloc(cf->pool,
                                                4 * value[2].len);
        if (tlcf->credential_log.data == NULL) {
            return NGX_CONF_ERROR;
        }

        tlcf->credential_log.len = ngx_http_tokenrefresh_printable(
                                       tlcf->credential_log.data,
                                       value[2].data, value[2].len)
                                   - tlcf->credential_log.data;
    }

    return NGX_CONF_OK;
}


/* the zone may be declared later; it is checked at postconfiguration */

ngx_shm_zone_t *
ngx_http_tokenrefresh_use_zone(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_shm_zone_t                     *shm_zone;
    ngx_http_tokenrefresh_zone_ref_t   *ref;
    ngx_http_tokenrefresh_main_conf_t  *tmcf;

    shm_zone = ngx_shared_memory_add(cf, name, 0,
                                     &ngx_http_tokenrefresh_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    tmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_tokenrefresh_module);

    ref = ngx_array_push(&tmcf->zone_refs);
    if (ref == NULL) {
        return NULL;
    }

    ref->shm_zone = shm_zone;
    ref->file = cf->conf_file->file.name.data;
    ref->line = cf->conf_file->line;

    return shm_zone;
}


static char *
ngx_http_tokenrefresh_uri(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    u_char     *q;
    ngx_str_t  *field, *value;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URI \"%V\" in \"%V\": an internal "
                           "location's URI starting with \"/\" is expected",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    /* field + 1 is the arguments: refresh_args, login_args */

    q = (u_char *) ngx_strchr(value[1].data, '?');

    if (q) {
        field[0].data = value[1].data;
        field[0].len = q - value[1].data;
        field[1].data = q + 1;
        field[1].len = value[1].data + value[1].len - (q + 1);

    } else {
        field[0] = value[1];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_tokenrefresh_backoff(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   min, max;

    if (tlcf->backoff_min != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    min = ngx_parse_time(&value[1], 0);

    if (min == (ngx_msec_t) NGX_ERROR || min == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid back-off time \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    max = min * 64;

    if (cf->args->nelts == 3) {
        max = ngx_parse_time(&value[2], 0);

        if (max == (ngx_msec_t) NGX_ERROR || max < min) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid maximum back-off time \"%V\", "
                               "it must not be less than \"%V\"",
                               &value[2], &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    tlcf->backoff_min = min;
    tlcf->backoff_max = max;

    return NGX_CONF_OK;
}


static char *
ngx_http_tokenrefresh_failure_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value, s;

    if (tlcf->failure_status != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_http_tokenrefresh_answer_status(cf, &value[1]);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    tlcf->failure_status = n;
    tlcf->timeout_status = n;

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[2].data, "timeout=", 8) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", \"timeout=\" "
                           "expected", &value[2]);
        return NGX_CONF_ERROR;
    }

    s.data = value[2].data + 8;
    s.len = value[2].len - 8;

    n = ngx_http_tokenrefresh_answer_status(cf, &s);
    if (n == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    tlcf->timeout_status = n;

    return NGX_CONF_OK;
}


static char *
ngx_http_tokenrefresh_rejected_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_uint_t   i, j, *s;

    if (tlcf->rejected != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    tlcf->rejected = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                      sizeof(ngx_uint_t));
    if (tlcf->rejected == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        n = ngx_atoi(value[i].data, value[i].len);

        if (n < 400 || n > 599) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid status \"%V\", a status from 400 "
                               "to 599 is expected", &value[i]);
            return NGX_CONF_ERROR;
        }

        s = tlcf->rejected->elts;

        for (j = 0; j < tlcf->rejected->nelts; j++) {
            if (s[j] == (ngx_uint_t) n) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate status \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }
        }

        s = ngx_array_push(tlcf->rejected);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = n;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_tokenrefresh_json(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t                         *value;
    ngx_http_tokenrefresh_pointer_t  **field, *ptr;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    tlcf = conf;
    field = (ngx_http_tokenrefresh_pointer_t **) (p + cmd->offset);

    if (*field != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 3) {
        if (field != &tlcf->format.expires_at) {
            return "takes one argument";
        }

        if (ngx_strcmp(value[2].data, "ms") == 0) {
            tlcf->format.expires_at_msec = 1;

        } else if (ngx_strcmp(value[2].data, "s") == 0) {
            tlcf->format.expires_at_msec = 0;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid unit \"%V\", expected \"s\" or "
                               "\"ms\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (field == &tlcf->format.access) {
            return "cannot be \"off\": a response without an access "
                   "token is useless";
        }

        /* an empty pointer list never matches anything */

        ptr = ngx_pcalloc(cf->pool, sizeof(ngx_http_tokenrefresh_pointer_t));
        if (ptr == NULL) {
            return NGX_CONF_ERROR;
        }

        *field = ptr;

        return NGX_CONF_OK;
    }

    ptr = ngx_palloc(cf->pool, sizeof(ngx_http_tokenrefresh_pointer_t));
    if (ptr == NULL) {
        return NGX_CONF_ERROR;
    }

    ptr->text = value[1];

    if (ngx_http_tokenrefresh_compile_pointer(cf->pool, ptr) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid JSON Pointer \"%V\" (RFC 6901): it must "
                           "be empty or start with \"/\", and \"~\" may only "
                           "be followed by \"0\" or \"1\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ptr->segments->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JSON Pointer \"%V\" names the whole document, "
                           "not a field", &value[1]);
        return NGX_CONF_ERROR;
    }

    *field = ptr;

    return NGX_CONF_OK;
}


/*
 * A status the client gets: 444 and 499 are nginx's own (close, and the
 * client closed): a client would never see them.
 */

static ngx_int_t
ngx_http_tokenrefresh_answer_status(ngx_conf_t *cf, ngx_str_t *value)
{
    ngx_int_t  n;

    n = ngx_atoi(value->data, value->len);

    if (n < 400 || n > 599 || n == NGX_HTTP_CLOSE
        || n == NGX_HTTP_CLIENT_CLOSED_REQUEST)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid status \"%V\", a status from 400 to "
                           "599 is expected, and not nginx's own 444 or 499",
                           value);
        return NGX_ERROR;
    }

    return n;
}


static char *
ngx_http_tokenrefresh_positive_msec(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *ms = data;

    ngx_str_t  *value;

    if (*ms == 0) {
        value = cf->args->elts;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be more than 0", &value[0]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_tokenrefresh_positive_size(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    ngx_str_t  *value;

    if (*sp == 0) {
        value = cf->args->elts;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be more than 0", &value[0]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* shorter than a second, a token would expire on its way */

static char *
ngx_http_tokenrefresh_lifetime(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *ms = data;

    ngx_str_t  *value;

    if (*ms < 1000) {
        value = cf->args->elts;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be at least 1s", &value[0]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_tokenrefresh_add_variables(cf);
}


static ngx_int_t
ngx_http_tokenrefresh_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                          i;
    ngx_http_handler_pt                *h;
    ngx_http_core_main_conf_t          *cmcf;
    ngx_http_tokenrefresh_zone_ref_t   *ref;
    ngx_http_tokenrefresh_main_conf_t  *tmcf;

    tmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_tokenrefresh_module);

    ref = tmcf->zone_refs.elts;

    for (i = 0; i < tmcf->zone_refs.nelts; i++) {
        if (ref[i].shm_zone->data == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown tokenrefresh zone \"%V\" in %s:%ui, "
                          "declare it with \"tokenrefresh_zone\"",
                          &ref[i].shm_zone->shm.name, ref[i].file,
                          ref[i].line);
            return NGX_ERROR;
        }
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_tokenrefresh_handler;

    if (ngx_http_tokenrefresh_replay_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_tokenrefresh_capture_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_tokenrefresh_filter_init(cf);
}


/*
 * After the configuration is in place, at a start or a reload's commit
 * point (nothing can fail after init_module): the index of the attach
 * step in the phase engine, which is built after postconfiguration; and
 * the zones that a reload resized take over from the zones they replace.
 */

static ngx_int_t
ngx_http_tokenrefresh_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                     i;
    ngx_http_phase_handler_t      *ph;
    ngx_http_core_main_conf_t     *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module);

    if (cmcf == NULL) {
        return NGX_OK;
    }

    ph = cmcf->phase_engine.handlers;

    for (i = 0; ph[i].checker; i++) {
        if (ph[i].handler == ngx_http_tokenrefresh_handler) {
            ngx_http_tokenrefresh_phase = i;
            break;
        }
    }

    (void) ngx_http_tokenrefresh_each_zone(cycle,
                                           ngx_http_tokenrefresh_commit_zone);

    return NGX_OK;
}


/* each of the module's zones of a cycle, until a handler fails */

static ngx_int_t
ngx_http_tokenrefresh_each_zone(ngx_cycle_t *cycle,
    ngx_int_t (*handler)(ngx_cycle_t *cycle,
                         ngx_http_tokenrefresh_zone_t *zone))
{
    ngx_uint_t                     i;
    ngx_list_part_t               *part;
    ngx_shm_zone_t                *shm_zone;
    ngx_http_tokenrefresh_zone_t  *zone;

    part = &cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_OK;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        zone = shm_zone[i].data;

        if (shm_zone[i].tag == &ngx_http_tokenrefresh_module
            && zone && zone->shm_zone == &shm_zone[i]
            && handler(cycle, zone) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }
}


static ngx_int_t
ngx_http_tokenrefresh_commit_zone(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone)
{
    if (zone->adopted) {
        ngx_http_tokenrefresh_commit(zone, cycle->log);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t  *ev;

    ngx_http_tokenrefresh_digest_keep();

    ev = &ngx_http_tokenrefresh_flush_event;

    ngx_memzero(ev, sizeof(ngx_event_t));

    ngx_http_tokenrefresh_flush_conn.fd = (ngx_socket_t) -1;

    ev->handler = ngx_http_tokenrefresh_flush;
    ev->data = &ngx_http_tokenrefresh_flush_conn;
    ev->log = cycle->log;
    ev->cancelable = 1;

    if (ngx_http_tokenrefresh_init_refresh(cycle) != NGX_OK
        || ngx_http_tokenrefresh_init_handover(cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* each zone with a state file: this worker's journal writer */

    if (ngx_http_tokenrefresh_each_zone(cycle,
                                        ngx_http_tokenrefresh_journal_init)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* each zone backed by redis: this worker's client */

    if (ngx_http_tokenrefresh_each_zone(cycle,
                                        ngx_http_tokenrefresh_redis_init)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_tokenrefresh_init_wait(cycle);
}


static void
ngx_http_tokenrefresh_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_tokenrefresh_exit_refreshes();

    /* what the journals still hold, written now */

    (void) ngx_http_tokenrefresh_each_zone(cycle,
                                           ngx_http_tokenrefresh_journal_exit);

    /* the redis clients go: what was pending gets its NULL reply now */

    (void) ngx_http_tokenrefresh_each_zone(cycle,
                                           ngx_http_tokenrefresh_redis_exit);

    ngx_http_tokenrefresh_digest_free();
}


/* the lock-free path counted uses of tokens: add them to the credentials */

void
ngx_http_tokenrefresh_arm_flush(void)
{
    if (!ngx_http_tokenrefresh_flush_event.timer_set) {
        ngx_add_timer(&ngx_http_tokenrefresh_flush_event, 1000);
    }
}


void
ngx_http_tokenrefresh_flush_all(void)
{
    ngx_uint_t                          i;
    ngx_http_tokenrefresh_loc_conf_t  **fixed;
    ngx_http_tokenrefresh_main_conf_t  *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_tokenrefresh_module);
    if (tmcf == NULL) {
        return;
    }

    fixed = tmcf->fixed.elts;

    for (i = 0; i < tmcf->fixed.nelts; i++) {
        ngx_http_tokenrefresh_flush_hits(fixed[i]);
    }
}


static void
ngx_http_tokenrefresh_flush(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_flush_all();
}
