
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * The worker's own request.  A subrequest needs a parent request in the
 * same worker, and nginx ends every subrequest of a client request that it
 * terminates (a client that hangs up, a failed write, an HTTP/2 connection
 * that closes): ngx_http_terminate_request() runs every cleanup of the
 * main request.  So a token request is a subrequest of a request that no
 * client has, made here, and lives until its answer is settled.
 *
 * What such a request needs, because nginx's code expects it of every
 * request: a connection with a real descriptor (the upstream module adds
 * the client connection's events, and nginx's own close path closes its
 * socket): one end of a socketpair whose other end stays open and silent,
 * so that the check for a client that went away never fires; a log with a
 * context; the server's configuration; variables sized to it; a copy of
 * the address of the client that noticed the need, for variables such as
 * $binary_remote_addr in a limit_req of the token location.  It is counted
 * in the connection statistics, as nginx's close path uncounts it, and
 * never logged itself (its subrequest is, with log_subrequest on).
 */


#include "ngx_http_tokenrefresh_module.h"


static ngx_connection_t *ngx_http_tokenrefresh_task_connection(
    ngx_http_request_t *cr);
static ngx_http_request_t *ngx_http_tokenrefresh_task_request(
    ngx_connection_t *c, ngx_http_request_t *cr, ngx_str_t *uri);
static void ngx_http_tokenrefresh_task_close_connection(ngx_connection_t *c);
static void ngx_http_tokenrefresh_task_handler(ngx_event_t *ev);
static void ngx_http_tokenrefresh_task_done(ngx_http_request_t *r);
static void ngx_http_tokenrefresh_task_close_peer(void *data);
static u_char *ngx_http_tokenrefresh_task_log_error(ngx_log_t *log,
    u_char *buf, size_t len);
static ngx_int_t ngx_http_tokenrefresh_task_copy_addr(ngx_pool_t *pool,
    ngx_connection_t *c, ngx_connection_t *cc);


ngx_http_request_t *
ngx_http_tokenrefresh_task_create(ngx_http_request_t *cr, ngx_str_t *uri)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    c = ngx_http_tokenrefresh_task_connection(cr);
    if (c == NULL) {
        return NULL;
    }

    r = ngx_http_tokenrefresh_task_request(c, cr, uri);
    if (r == NULL) {
        ngx_http_tokenrefresh_task_close_connection(c);
        return NULL;
    }

#if (NGX_STAT_STUB)
    (void) ngx_atomic_fetch_add(ngx_stat_active, 1);
#endif

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "tokenrefresh: worker request *%uA created", c->number);

    return r;
}


/* the connection: one end of a socketpair, a log and addresses */

static ngx_connection_t *
ngx_http_tokenrefresh_task_connection(ngx_http_request_t *cr)
{
    int                  fds[2];
    ngx_log_t           *log;
    ngx_pool_t          *pool;
    ngx_connection_t    *c, *cc;
    ngx_pool_cleanup_t  *cln;
    ngx_http_log_ctx_t  *lctx;

    cc = cr->connection;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cc->log, ngx_socket_errno,
                      "tokenrefresh: socketpair() failed");
        return NULL;
    }

    if (ngx_nonblocking(fds[0]) == -1 || ngx_nonblocking(fds[1]) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cc->log, ngx_socket_errno,
                      ngx_nonblocking_n " failed");
        goto failed;
    }

    pool = ngx_create_pool(512, cc->log);
    if (pool == NULL) {
        goto failed;
    }

    /* nginx's close path closes fds[0]; the pool's cleanup, the other */

    cln = ngx_pool_cleanup_add(pool, sizeof(ngx_socket_t));
    if (cln == NULL) {
        ngx_destroy_pool(pool);
        goto failed;
    }

    cln->handler = ngx_http_tokenrefresh_task_close_peer;
    *(ngx_socket_t *) cln->data = fds[1];

    c = ngx_get_connection(fds[0], cc->log);
    if (c == NULL) {
        ngx_close_socket(fds[0]);
        ngx_destroy_pool(pool);
        return NULL;
    }

    c->pool = pool;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->start_time = ngx_current_msec;

    log = ngx_palloc(pool, sizeof(ngx_log_t));
    lctx = ngx_pcalloc(pool, sizeof(ngx_http_log_ctx_t));
    c->data = ngx_pcalloc(pool, sizeof(ngx_http_connection_t));

    if (log == NULL || lctx == NULL || c->data == NULL
        || ngx_http_tokenrefresh_task_copy_addr(pool, c, cc) != NGX_OK)
    {
        ngx_http_tokenrefresh_task_close_connection(c);
        return NULL;
    }

    /* a log of its own: the client's goes with the client's pool */

    *log = *cc->log;
    log->connection = c->number;
    log->handler = ngx_http_tokenrefresh_task_log_error;
    log->data = lctx;
    log->action = NULL;

    pool->log = log;

    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->log_error = NGX_ERROR_INFO;

    c->recv = ngx_recv;
    c->send = ngx_send;
    c->recv_chain = ngx_recv_chain;
    c->send_chain = ngx_send_chain;

    c->read->handler = ngx_http_tokenrefresh_task_handler;
    c->write->handler = ngx_http_tokenrefresh_task_handler;

    lctx->connection = c;

    return c;

failed:

    ngx_close_socket(fds[0]);
    ngx_close_socket(fds[1]);

    return NULL;
}


/* the request: the client's server, no headers, never logged itself */

static ngx_http_request_t *
ngx_http_tokenrefresh_task_request(ngx_connection_t *c,
    ngx_http_request_t *cr, ngx_str_t *uri)
{
    ngx_time_t                 *tp;
    ngx_http_request_t         *r;
    ngx_http_log_ctx_t         *lctx;
    ngx_http_connection_t      *hc;
    ngx_http_core_srv_conf_t   *cscf;
    ngx_http_core_main_conf_t  *cmcf;

    cscf = ngx_http_get_module_srv_conf(cr, ngx_http_core_module);

    hc = c->data;
    hc->conf_ctx = cscf->ctx;

    r = ngx_pcalloc(c->pool, sizeof(ngx_http_request_t));
    if (r == NULL) {
        return NULL;
    }

    r->pool = ngx_create_pool(cscf->request_pool_size, c->log);
    if (r->pool == NULL) {
        return NULL;
    }

    r->signature = NGX_HTTP_MODULE;
    r->connection = c;
    r->http_connection = hc;
    r->main_conf = cscf->ctx->main_conf;
    r->srv_conf = cscf->ctx->srv_conf;
    r->loc_conf = cscf->ctx->loc_conf;
    r->main = r;
    r->count = 1;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);

    r->ctx = ngx_pcalloc(r->pool, sizeof(void *) * ngx_http_max_module);
    r->header_in = ngx_create_temp_buf(r->pool, 1);
    r->variables = ngx_pcalloc(r->pool, cmcf->variables.nelts
                                        * sizeof(ngx_http_variable_value_t));

    /* $host in the token location: the client's */

    r->headers_in.server.data = ngx_pstrdup(r->pool, &cr->headers_in.server);
    r->headers_in.server.len = cr->headers_in.server.len;

    if (r->ctx == NULL || r->header_in == NULL || r->variables == NULL
        || (cr->headers_in.server.len && r->headers_in.server.data == NULL)
        || ngx_list_init(&r->headers_out.headers, r->pool, 1,
                         sizeof(ngx_table_elt_t))
           != NGX_OK
        || ngx_list_init(&r->headers_out.trailers, r->pool, 1,
                         sizeof(ngx_table_elt_t))
           != NGX_OK
        || ngx_list_init(&r->headers_in.headers, r->pool, 1,
                         sizeof(ngx_table_elt_t))
           != NGX_OK)
    {
        ngx_destroy_pool(r->pool);
        return NULL;
    }

    r->headers_in.content_length_n = -1;
    r->headers_in.keep_alive_n = -1;

    r->method = NGX_HTTP_GET;
    ngx_str_set(&r->method_name, "GET");
    r->http_version = NGX_HTTP_VERSION_11;
    ngx_str_set(&r->http_protocol, "HTTP/1.1");
    ngx_str_set(&r->schema, "http");
    r->uri = *uri;
    r->unparsed_uri = *uri;
    r->valid_unparsed_uri = 1;

    tp = ngx_timeofday();
    r->start_sec = tp->sec;
    r->start_msec = tp->msec;

    r->internal = 1;
    r->logged = 1;
    r->uri_changes = 0;
    r->post_action = 1;          /* post_action never runs for it */
    r->subrequests = NGX_HTTP_MAX_SUBREQUESTS + 1;
    r->http_state = NGX_HTTP_PROCESS_REQUEST_STATE;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_tokenrefresh_task_done;

    lctx = c->log->data;
    lctx->request = r;
    lctx->current_request = r;

    c->data = r;

    return r;
}


/* before the request holds it, the connection closes on its own */

static void
ngx_http_tokenrefresh_task_close_connection(ngx_connection_t *c)
{
    ngx_pool_t  *pool;

    pool = c->pool;

    ngx_close_connection(c);
    ngx_destroy_pool(pool);
}


/* starts the subrequest posted to the worker's request */

void
ngx_http_tokenrefresh_task_run(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    ngx_http_run_posted_requests(c);
}


/*
 * Ends the worker's request and its subrequest wherever it is: nginx's
 * own termination runs the upstream's cleanup (the connection to the
 * token endpoint is closed), frees the pool, and closes the connection.
 */

void
ngx_http_tokenrefresh_task_stop(ngx_http_request_t *r)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "tokenrefresh: worker request *%uA stops", c->number);

    ngx_http_finalize_request(r, NGX_ERROR);
    ngx_http_run_posted_requests(c);
}


/* was the token request sent?  Then its outcome is the provider's. */

ngx_uint_t
ngx_http_tokenrefresh_task_sent(ngx_http_request_t *sr)
{
    ngx_http_upstream_t  *u;

    if (sr == NULL) {
        return 0;
    }

    u = sr->upstream;

    if (u == NULL) {
        return 0;
    }

    return u->request_sent
           || (sr->upstream_states && sr->upstream_states->nelts > 1);
}


/*
 * The events of the connection, dispatched as nginx does for client
 * connections, to the request active on it.  A worker that shuts down
 * closes every connection at worker_shutdown_timeout: this one settles
 * its refresh first.
 */

static void
ngx_http_tokenrefresh_task_handler(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    c = ev->data;
    r = c->data;

    ngx_http_set_log_request(c->log, r);

    if (c->close) {
        ngx_http_tokenrefresh_cut(r->main, "the worker is shutting down");
        ngx_http_tokenrefresh_task_stop(r->main);
        return;
    }

    if (ev->delayed && ev->timedout) {
        ev->delayed = 0;
        ev->timedout = 0;
    }

    if (ev->write) {
        r->write_event_handler(r);

    } else {
        r->read_event_handler(r);
    }

    ngx_http_run_posted_requests(c);
}


/* the subrequest is over, and wakes its parent: the end of the task */

static void
ngx_http_tokenrefresh_task_done(ngx_http_request_t *r)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tokenrefresh: worker request *%uA done",
                   r->connection->number);

    /* terminated, not finalized: no keepalive, no lingering close */

    ngx_http_finalize_request(r, NGX_ERROR);
}


static void
ngx_http_tokenrefresh_task_close_peer(void *data)
{
    ngx_socket_t  *s = data;

    if (ngx_close_socket(*s) == -1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_socket_errno,
                      ngx_close_socket_n " failed");
    }
}


/* where a line of the token request comes from, without any token */

static u_char *
ngx_http_tokenrefresh_task_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char                            *p, *last;
    ngx_http_request_t                *r, *sr;
    ngx_http_upstream_t               *u;
    ngx_http_tokenrefresh_refresh_t   *rf;
    ngx_http_log_ctx_t  *lctx;

    p = buf;
    last = buf + len;

    if (log->action) {
        p = ngx_slprintf(p, last, " while %s", log->action);
    }

    lctx = log->data;
    r = lctx->request;

    rf = r ? ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module) : NULL;

    if (rf && rf->log_name.len) {
        p = ngx_slprintf(p, last, ", %s of credential \"%V\"",
                         ngx_http_tokenrefresh_grant_names[rf->grant],
                         &rf->log_name);
    }

    sr = lctx->current_request;

    if (sr && sr != r) {
        p = ngx_slprintf(p, last, ", location: \"%V\"", &sr->uri);

        u = sr->upstream;

        if (u && u->peer.name) {
            p = ngx_slprintf(p, last, ", upstream: \"%V\"", u->peer.name);
        }
    }

    return p;
}


static ngx_int_t
ngx_http_tokenrefresh_task_copy_addr(ngx_pool_t *pool, ngx_connection_t *c,
    ngx_connection_t *cc)
{
    c->sockaddr = ngx_palloc(pool, cc->socklen);
    c->addr_text.data = ngx_pstrdup(pool, &cc->addr_text);

    if (c->sockaddr == NULL || c->addr_text.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(c->sockaddr, cc->sockaddr, cc->socklen);
    c->socklen = cc->socklen;
    c->addr_text.len = cc->addr_text.len;

    if (cc->local_sockaddr == NULL
        && ngx_connection_local_sockaddr(cc, NULL, 0) != NGX_OK)
    {
        return NGX_OK;
    }

    c->local_sockaddr = ngx_palloc(pool, cc->local_socklen);
    if (c->local_sockaddr == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(c->local_sockaddr, cc->local_sockaddr, cc->local_socklen);
    c->local_socklen = cc->local_socklen;

    return NGX_OK;
}
