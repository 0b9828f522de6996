
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * The journal: how a worker makes a change to a zone durable without
 * copying the zone and without waiting for the disk in its event loop.
 *
 * A change (a refresh stored, a session created or ended) becomes one
 * sealed frame (ngx_http_tokenrefresh_records.c) of what it changed, made
 * under the zone's mutex in the time it takes to copy one credential.
 * The frame is appended to "<state file>.journal" and synced by a task of
 * nginx's default thread pool; the caller's handler runs in the event loop
 * when the frame is on disk: a refresh releases its lease there, so that
 * a rotated refresh token is durable before anyone may use it.  A worker
 * has at most one task in flight: frames made meanwhile wait, and the next
 * task writes them all with one write and one sync.  While a task runs, a
 * timer that cannot be cancelled keeps a gracefully exiting worker alive
 * until it is done.  If the pool's queue is full, or nginx was built
 * without threads, the same work is done in the event loop.
 *
 * A write that failed keeps its frames for the next one (a timer retries
 * within a second), and the lease waits for nobody: a disk that fails is
 * logged, not a reason to stop serving.  A worker killed in the middle of
 * an append leaves a torn frame that would hide every frame after it: the
 * end of the last good append is kept in the lock file, and the next
 * append cuts what lies beyond it.
 *
 * When the journal has grown as large as the snapshot (and at least
 * NGX_HTTP_TOKENREFRESH_COMPACT), or there is no snapshot yet, the writer
 * compacts it in a task of its own, which does not delay the appends: the
 * journal is renamed to "<state file>.journal.old", merged with the
 * snapshot into a new snapshot, which replaces the old one, and removed.
 * The merge reads the files, never the zone.
 *
 * Locks.  Record locks on "<state file>.lock", open file description
 * locks (F_OFD_SETLKW) because the classic ones belong to the process, and
 * a worker's thread and event loop must exclude each other too: byte 0
 * for an append or the rename of the journal, byte 1 for whoever replaces
 * the snapshot (a compaction, or ngx_http_tokenrefresh_state_save()).
 *
 * Nothing in a thread uses a pool or logs: the task says what failed and
 * the event loop logs it.
 */


#include "ngx_http_tokenrefresh_module.h"


#define NGX_HTTP_TOKENREFRESH_COMPACT  (64 * 1024)
#define NGX_HTTP_TOKENREFRESH_MAX_FILE (256 * 1024 * 1024)

/* frames kept for a retry at most; beyond, the whole zone is written */
#define NGX_HTTP_TOKENREFRESH_RETRY_MAX (16 * 1024 * 1024)

/* threads only where a thread and its event loop can exclude each other */
#if (NGX_THREADS) && defined(F_OFD_SETLKW)
#define NGX_HTTP_TOKENREFRESH_THREADS  1
#else
#define NGX_HTTP_TOKENREFRESH_THREADS  0
#endif

#define NGX_HTTP_TOKENREFRESH_MARK_AT  8


/* where the last good append ended, in the lock file */
typedef struct {
    dev_t                             dev;
    ino_t                             ino;
    off_t                             end;
} ngx_http_tokenrefresh_mark_t;


typedef struct {
    ngx_queue_t                       queue;
    void                            (*handler)(void *data, ngx_int_t rc);
    void                             *data;
} ngx_http_tokenrefresh_waiter_t;


/* what a task does, and what it found */
typedef struct {
    ngx_http_tokenrefresh_zone_t     *zone;
    u_char                           *frames;
    size_t                            len;
    int64_t                           now;

    ngx_uint_t                        compact_only;
    ngx_uint_t                        compact_due;
    off_t                             cut;         /* torn bytes cut */

    ngx_int_t                         rc;
    const char                       *failed;
    ngx_err_t                         err;
    ngx_int_t                         compacted;   /* 0, NGX_OK, NGX_ERROR */
    const char                       *compact_failed;
    ngx_err_t                         compact_err;
    size_t                            journal_size;
    ngx_uint_t                        count;
    ngx_uint_t                        sessions;
    ngx_uint_t                        frames_merged;
} ngx_http_tokenrefresh_job_t;


typedef struct ngx_http_tokenrefresh_writer_s {
    ngx_http_tokenrefresh_zone_t     *zone;
    ngx_queue_t                       pending;
    ngx_queue_t                       running;
    u_char                           *next;
    size_t                            next_len;
    size_t                            next_size;
    ngx_uint_t                        busy;
    ngx_uint_t                        compacting;
    ngx_event_t                       hold;
    ngx_event_t                       retry;
#if (NGX_HTTP_TOKENREFRESH_THREADS)
    ngx_thread_pool_t                *pool;
    ngx_thread_task_t                *task;
    ngx_thread_task_t                *ctask;
#endif
    ngx_http_tokenrefresh_job_t      *job;
    ngx_http_tokenrefresh_job_t      *cjob;
    ngx_log_t                        *log;
} ngx_http_tokenrefresh_writer_t;


static void ngx_http_tokenrefresh_journal_post(
    ngx_http_tokenrefresh_writer_t *w);
static void ngx_http_tokenrefresh_journal_thread(void *data, ngx_log_t *log);
static void ngx_http_tokenrefresh_journal_done(ngx_event_t *ev);
static void ngx_http_tokenrefresh_journal_compact(
    ngx_http_tokenrefresh_job_t *job);
static ngx_int_t ngx_http_tokenrefresh_compact_merge(
    ngx_http_tokenrefresh_job_t *job, ngx_http_tokenrefresh_merge_t *m);
static ngx_int_t ngx_http_tokenrefresh_write_file(ngx_str_t *path,
    u_char *data, size_t len, ngx_str_t *dir, ngx_uid_t owner,
    ngx_gid_t group);
static ssize_t ngx_http_tokenrefresh_read_all(ngx_fd_t fd, u_char *buf,
    size_t len);
static ngx_int_t ngx_http_tokenrefresh_slurp(u_char *path, u_char **data,
    size_t *len);
static void ngx_http_tokenrefresh_journal_hold(ngx_event_t *ev);
static void ngx_http_tokenrefresh_journal_retry(ngx_event_t *ev);
static void ngx_http_tokenrefresh_journal_held(
    ngx_http_tokenrefresh_writer_t *w);
static void ngx_http_tokenrefresh_compact_post(
    ngx_http_tokenrefresh_writer_t *w);
static void ngx_http_tokenrefresh_compact_thread(void *data, ngx_log_t *log);
static void ngx_http_tokenrefresh_compact_done(ngx_event_t *ev);
static void ngx_http_tokenrefresh_journal_requeue(
    ngx_http_tokenrefresh_writer_t *w, ngx_http_tokenrefresh_job_t *job);
static ngx_int_t ngx_http_tokenrefresh_mark(ngx_fd_t lock,
    ngx_http_tokenrefresh_mark_t *mark, ngx_uint_t write);


/* in each worker, for each zone with a state file */

ngx_int_t
ngx_http_tokenrefresh_journal_init(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_uint_t                       resave;
    ngx_http_tokenrefresh_writer_t  *w;

    if (zone->state == NULL) {
        return NGX_OK;
    }

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_tokenrefresh_writer_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->zone = zone;
    w->log = cycle->log;
    ngx_queue_init(&w->pending);
    ngx_queue_init(&w->running);

    w->job = ngx_pcalloc(cycle->pool, sizeof(ngx_http_tokenrefresh_job_t));
    w->cjob = ngx_pcalloc(cycle->pool, sizeof(ngx_http_tokenrefresh_job_t));
    if (w->job == NULL || w->cjob == NULL) {
        return NGX_ERROR;
    }

    w->hold.handler = ngx_http_tokenrefresh_journal_hold;
    w->hold.data = w;
    w->hold.log = cycle->log;
    w->hold.cancelable = 0;

    w->retry.handler = ngx_http_tokenrefresh_journal_retry;
    w->retry.data = w;
    w->retry.log = cycle->log;
    w->retry.cancelable = 1;

#if (NGX_HTTP_TOKENREFRESH_THREADS)
    w->pool = zone->state->thread_pool;

    if (w->pool) {
        w->task = ngx_thread_task_alloc(cycle->pool, 0);
        w->ctask = ngx_thread_task_alloc(cycle->pool, 0);
        if (w->task == NULL || w->ctask == NULL) {
            return NGX_ERROR;
        }

        w->task->ctx = w->job;
        w->task->handler = ngx_http_tokenrefresh_journal_thread;
        w->task->event.handler = ngx_http_tokenrefresh_journal_done;
        w->task->event.data = w;
        w->task->event.log = cycle->log;

        w->ctask->ctx = w->cjob;
        w->ctask->handler = ngx_http_tokenrefresh_compact_thread;
        w->ctask->event.handler = ngx_http_tokenrefresh_compact_done;
        w->ctask->event.data = w;
        w->ctask->event.log = cycle->log;
    }
#endif

    zone->state->writer = w;

    /*
     * a reload gave a zone that was kept a state file it never wrote: the
     * first worker to start writes the whole zone, or the next compaction
     * would make a snapshot of what changed since
     */

    if (zone->sh->resave) {
        ngx_shmtx_lock(&zone->shpool->mutex);
        resave = zone->sh->resave;
        zone->sh->resave = 0;
        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (resave) {
            (void) ngx_http_tokenrefresh_state_save(zone, cycle->log);
        }
    }

    return NGX_OK;
}


/*
 * The worker exits: nginx has already stopped the thread pool (its module
 * exits first), after the task in flight ran; what it wrote is settled
 * here, and the frames that waited are written, in this process.
 */

ngx_int_t
ngx_http_tokenrefresh_journal_exit(ngx_cycle_t *cycle,
    ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_event_t                      ev;
    ngx_http_tokenrefresh_writer_t  *w;

    w = zone->state ? zone->state->writer : NULL;

    if (w == NULL) {
        return NGX_OK;
    }

#if (NGX_HTTP_TOKENREFRESH_THREADS)
    w->pool = NULL;
#endif

    ev.data = w;

    if (w->compacting) {
        ngx_http_tokenrefresh_compact_done(&ev);
    }

    if (w->busy) {
        ngx_http_tokenrefresh_journal_done(&ev);
    }

    if (!w->busy && w->next_len) {
        /* the pool is gone: in this process, once more */
        ngx_http_tokenrefresh_journal_post(w);
    }

    if (w->retry.timer_set) {
        ngx_del_timer(&w->retry);
    }

    return NGX_OK;
}


/* the next sequence number, under the zone's mutex */

uint64_t
ngx_http_tokenrefresh_journal_seq(ngx_http_tokenrefresh_shctx_t *sh)
{
    uint64_t  seq;

    /*
     * numbers that grow with the wall clock too: the frames of a zone a
     * reload replaced and those of its successor sort by time
     */

    seq = (uint64_t) ngx_time() << 20;
    sh->journal_seq = ngx_max(sh->journal_seq + 1, seq);

    return sh->journal_seq;
}


/*
 * Makes the frame of a change: the credential "name" as it is now (none
 * if it is gone), the sessions deleted since the last frame, and "spent"
 * if the zone counts it spent.  The handler, if any, runs exactly once:
 * when the frame is on disk, or failed to get there (rc NGX_ERROR); it
 * may run before this function returns.
 */

ngx_int_t
ngx_http_tokenrefresh_journal_put(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t session, u_char *spent,
    void (*handler)(void *data, ngx_int_t rc), void *data, ngx_log_t *log)
{
    u_char                          *p, *plain, *next;
    size_t                           len, size;
    uint64_t                         seq;
    ngx_str_t                        content;
    ngx_uint_t                       i, ops, spend, lost;
    ngx_http_tokenrefresh_node_t    *tn;
    ngx_http_tokenrefresh_shctx_t   *sh;
    ngx_http_tokenrefresh_writer_t  *w;
    ngx_http_tokenrefresh_waiter_t  *wt;

    w = zone->state->writer;
    sh = zone->sh;
    plain = NULL;
    wt = NULL;
    lost = 0;

    if (w == NULL || zone->state->blocked) {
        /* not a worker, or a rejected file is in the way: it says why */
        goto failed;
    }

    if (handler) {
        wt = ngx_alloc(sizeof(ngx_http_tokenrefresh_waiter_t), log);
        if (wt == NULL) {
            goto failed;
        }

        wt->handler = handler;
        wt->data = data;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    tn = name ? ngx_http_tokenrefresh_node_of(zone, name, session) : NULL;
    spend = (spent && ngx_http_tokenrefresh_spent(zone, spent));

    len = 8 + 2 + sh->gone_count * (1 + NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
          + (spend ? 1 + NGX_HTTP_TOKENREFRESH_DIGEST_LEN : 0)
          + (tn ? 1 + ngx_http_tokenrefresh_record_len(tn) : 0);

    plain = ngx_alloc(len, log);
    if (plain == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        goto failed;
    }

    seq = ngx_http_tokenrefresh_journal_seq(sh);

    ops = sh->gone_count + (spend ? 1 : 0) + (tn ? 1 : 0);

    p = ngx_http_tokenrefresh_put(plain, seq, 8);
    p = ngx_http_tokenrefresh_put(p, ops, 2);

    for (i = 0; i < sh->gone_count; i++) {
        *p++ = NGX_HTTP_TOKENREFRESH_OP_GONE;
        p = ngx_cpymem(p, sh->gone[i], NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    sh->gone_count = 0;

    /* more sessions ended than the ring holds: the whole zone, below */
    lost = sh->gone_lost;
    sh->gone_lost = 0;

    if (spend) {
        *p++ = NGX_HTTP_TOKENREFRESH_OP_SPENT;
        p = ngx_cpymem(p, spent, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    if (tn) {
        *p++ = NGX_HTTP_TOKENREFRESH_OP_PUT;
        p = ngx_http_tokenrefresh_record_write(p, tn);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    /* sealed in the event loop: a few microseconds for a credential */

    size = 4 + NGX_HTTP_TOKENREFRESH_FRAME_LEN(len);

    if (w->next_len + size > w->next_size) {
        next = ngx_alloc(ngx_max(2 * w->next_size, w->next_len + size), log);
        if (next == NULL) {
            goto failed;
        }

        if (w->next) {
            ngx_memcpy(next, w->next, w->next_len);
            ngx_explicit_memzero(w->next, w->next_len);
            ngx_free(w->next);
        }

        w->next = next;
        w->next_size = ngx_max(2 * w->next_size, w->next_len + size);
    }

    content.data = plain;
    content.len = len;

    p = ngx_http_tokenrefresh_put(w->next + w->next_len, size - 4, 4);

    if (ngx_http_tokenrefresh_seal_frame(zone->state->key,
                                         &zone->state->journal_aad, &content,
                                         p)
        != NGX_OK)
    {
        goto failed;
    }

    w->next_len += size;

    ngx_explicit_memzero(plain, len);
    ngx_free(plain);

    if (wt) {
        ngx_queue_insert_tail(&w->pending, &wt->queue);
    }

    if (!w->busy) {
        ngx_http_tokenrefresh_journal_post(w);
    }

    if (lost) {
        (void) ngx_http_tokenrefresh_state_save(zone, log);
    }

    return NGX_OK;

failed:

    if (plain) {
        ngx_explicit_memzero(plain, len);
        ngx_free(plain);
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "tokenrefresh: a change to zone \"%V\" was not written to "
                  "its journal; a restart now would use older tokens",
                  &zone->shm_zone->shm.name);

    if (wt) {
        ngx_free(wt);
    }

    if (handler) {
        handler(data, NGX_ERROR);
    }

    return NGX_ERROR;
}


static void
ngx_http_tokenrefresh_journal_post(ngx_http_tokenrefresh_writer_t *w)
{
    ngx_event_t                   ev;
    ngx_http_tokenrefresh_job_t  *job;

    if (w->next_len == 0) {
        return;
    }

    job = w->job;
    ngx_memzero(job, sizeof(ngx_http_tokenrefresh_job_t));

    job->zone = w->zone;
    job->frames = w->next;
    job->len = w->next_len;
    job->now = ngx_http_tokenrefresh_now();

    w->next = NULL;
    w->next_len = 0;
    w->next_size = 0;

    ngx_queue_add(&w->running, &w->pending);
    ngx_queue_init(&w->pending);

    w->busy = 1;

    if (w->retry.timer_set) {
        ngx_del_timer(&w->retry);
    }

#if (NGX_HTTP_TOKENREFRESH_THREADS)

    if (w->pool) {
        if (ngx_thread_task_post(w->pool, w->task) == NGX_OK) {
            ngx_http_tokenrefresh_journal_held(w);
            return;
        }

        ngx_log_error(NGX_LOG_WARN, w->log, 0,
                      "tokenrefresh: the thread pool's queue is full, the "
                      "journal of zone \"%V\" is written in the event loop",
                      &w->zone->shm_zone->shm.name);
    }

#endif

    ngx_http_tokenrefresh_journal_thread(job, w->log);

    ev.data = w;
    ngx_http_tokenrefresh_journal_done(&ev);
}


/* in a thread: no pool, no log, no zone, only the files */

static void
ngx_http_tokenrefresh_journal_thread(void *data, ngx_log_t *log)
{
    ngx_http_tokenrefresh_job_t *job = data;

    ssize_t                          n;
    off_t                            before;
    ngx_fd_t                         lock, fd;
    ngx_file_info_t                  fi, si;
    ngx_http_tokenrefresh_mark_t     mark;
    ngx_http_tokenrefresh_state_t   *st;

    st = job->zone->state;
    job->rc = NGX_ERROR;
    fd = NGX_INVALID_FILE;
    before = 0;

    lock = open((char *) st->lock.data,
                O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC, 0600);
    if (lock == NGX_INVALID_FILE) {
        job->failed = "open() of the lock file";
        job->err = ngx_errno;
        return;
    }

    if (ngx_http_tokenrefresh_lock_range(lock, 0, F_WRLCK) != NGX_OK) {
        job->failed = "locking the journal";
        job->err = ngx_errno;
        goto done;
    }

    fd = open((char *) st->journal.data,
              O_WRONLY|O_APPEND|O_CREAT|O_NOFOLLOW|O_CLOEXEC, 0600);
    if (fd == NGX_INVALID_FILE) {
        job->failed = "open()";
        job->err = ngx_errno;
        goto done;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        job->failed = "fstat()";
        job->err = ngx_errno;
        goto done;
    }

    before = ngx_file_size(&fi);

    /* what a worker killed during its append left beyond the last one */

    if (ngx_http_tokenrefresh_mark(lock, &mark, 0) == NGX_OK
        && mark.dev == fi.st_dev && mark.ino == fi.st_ino
        && before > mark.end)
    {
        if (ftruncate(fd, mark.end) == -1) {
            job->failed = "ftruncate() of a torn frame";
            job->err = ngx_errno;
            goto done;
        }

        job->cut = before - mark.end;
        before = mark.end;
    }

    n = write(fd, job->frames, job->len);

    if (n != (ssize_t) job->len) {
        job->failed = "write()";
        job->err = (n == -1) ? ngx_errno : NGX_ENOSPC;

        /* a torn frame would hide every frame after it */

        if (ftruncate(fd, before) == -1) {
            job->failed = "write() and ftruncate()";
        }

        goto done;
    }

    job->journal_size = before + n;

    mark.dev = fi.st_dev;
    mark.ino = fi.st_ino;
    mark.end = job->journal_size;
    (void) ngx_http_tokenrefresh_mark(lock, &mark, 1);

    (void) ngx_http_tokenrefresh_lock_range(lock, 0, F_UNLCK);

    if (fdatasync(fd) == -1) {
        job->failed = "fdatasync()";
        job->err = ngx_errno;
        goto done;
    }

    /* a new journal's name, on disk too */

    if (before == 0) {
        (void) ngx_http_tokenrefresh_write_file(NULL, NULL, 0, &st->dir,
                                                (ngx_uid_t) -1,
                                                (ngx_gid_t) -1);
    }

    job->rc = NGX_OK;

    /* the first change makes a snapshot: there is always one to look at */

    job->compact_due = (ngx_file_info(st->path.data, &si) == NGX_FILE_ERROR
                        || (job->journal_size >= NGX_HTTP_TOKENREFRESH_COMPACT
                            && (off_t) job->journal_size
                               >= ngx_file_size(&si)));

done:

    if (fd != NGX_INVALID_FILE) {
        close(fd);
    }

    /* closing the only descriptor releases its locks */
    close(lock);
}


/* in the event loop again */

static void
ngx_http_tokenrefresh_journal_done(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_writer_t *w = ev->data;

    ngx_queue_t                     *q;
    ngx_http_tokenrefresh_job_t     *job;
    ngx_http_tokenrefresh_waiter_t  *wt;

    job = w->job;
    w->busy = 0;

    ngx_http_tokenrefresh_journal_held(w);

    if (job->cut) {
        ngx_log_error(NGX_LOG_WARN, w->log, 0,
                      "tokenrefresh: %O bytes of a torn frame (a worker "
                      "stopped during an append) were cut from the journal "
                      "\"%V\"", job->cut, &w->zone->state->journal);
    }

    if (job->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, w->log, job->err,
                      "tokenrefresh: %s of the journal \"%V\" failed; the "
                      "frames are kept and written again, a restart now "
                      "would use older tokens",
                      job->failed, &w->zone->state->journal);

        ngx_http_tokenrefresh_journal_requeue(w, job);

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, w->log, 0,
                       "tokenrefresh: %uz bytes appended to the journal, "
                       "now %uz", job->len, job->journal_size);

        ngx_explicit_memzero(job->frames, job->len);
        ngx_free(job->frames);
    }

    job->frames = NULL;

    /*
     * the waiters go on even after a failure: a lease cannot wait for a
     * disk that may not come back, and the frames are written again
     */

    while (!ngx_queue_empty(&w->running)) {
        q = ngx_queue_head(&w->running);
        ngx_queue_remove(q);

        wt = ngx_queue_data(q, ngx_http_tokenrefresh_waiter_t, queue);
        wt->handler(wt->data, job->rc);
        ngx_free(wt);
    }

    if (job->rc == NGX_OK && job->compact_due && !w->compacting) {
        ngx_http_tokenrefresh_compact_post(w);
    }

    /* what came meanwhile, in one task */

    if (job->rc == NGX_OK && (!ngx_queue_empty(&w->pending) || w->next_len))
    {
        ngx_http_tokenrefresh_journal_post(w);
    }
}


/*
 * The frames of a failed write go before the ones made since, for the next
 * write (they carry their numbers: written twice, they mean the same);
 * too many, and the whole zone is written instead.
 */

static void
ngx_http_tokenrefresh_journal_requeue(ngx_http_tokenrefresh_writer_t *w,
    ngx_http_tokenrefresh_job_t *job)
{
    u_char  *p;

    if (job->len + w->next_len > NGX_HTTP_TOKENREFRESH_RETRY_MAX) {
        ngx_explicit_memzero(job->frames, job->len);
        ngx_free(job->frames);
        (void) ngx_http_tokenrefresh_state_save(w->zone, w->log);
        goto retry;
    }

    p = ngx_alloc(job->len + w->next_len, w->log);
    if (p == NULL) {
        ngx_explicit_memzero(job->frames, job->len);
        ngx_free(job->frames);
        goto retry;
    }

    ngx_memcpy(p, job->frames, job->len);

    if (w->next) {
        ngx_memcpy(p + job->len, w->next, w->next_len);
        ngx_explicit_memzero(w->next, w->next_len);
        ngx_free(w->next);
    }

    ngx_explicit_memzero(job->frames, job->len);
    ngx_free(job->frames);

    w->next = p;
    w->next_len += job->len;
    w->next_size = w->next_len;

retry:

    if (!w->retry.timer_set && !ngx_exiting && !ngx_terminate) {
        ngx_add_timer(&w->retry, 1000);
    }
}


static void
ngx_http_tokenrefresh_journal_retry(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_writer_t *w = ev->data;

    if (!w->busy && w->next_len) {
        ngx_http_tokenrefresh_journal_post(w);
    }
}


/* a graceful exit waits while a task runs: a timer it cannot cancel */

static void
ngx_http_tokenrefresh_journal_held(ngx_http_tokenrefresh_writer_t *w)
{
    if (w->busy || w->compacting) {
        if (!w->hold.timer_set) {
            ngx_add_timer(&w->hold, 86400000);
        }

    } else if (w->hold.timer_set) {
        ngx_del_timer(&w->hold);
    }
}


static void
ngx_http_tokenrefresh_journal_hold(ngx_event_t *ev)
{
    /* a task that runs for a day: keep waiting for it */
    ngx_add_timer(ev, 86400000);
}


static void
ngx_http_tokenrefresh_compact_post(ngx_http_tokenrefresh_writer_t *w)
{
    ngx_event_t                   ev;
    ngx_http_tokenrefresh_job_t  *job;

    job = w->cjob;
    ngx_memzero(job, sizeof(ngx_http_tokenrefresh_job_t));

    job->zone = w->zone;
    job->compact_only = 1;
    job->now = ngx_http_tokenrefresh_now();

    w->compacting = 1;

#if (NGX_HTTP_TOKENREFRESH_THREADS)

    if (w->pool) {
        if (ngx_thread_task_post(w->pool, w->ctask) == NGX_OK) {
            ngx_http_tokenrefresh_journal_held(w);
            return;
        }
    }

#endif

    ngx_http_tokenrefresh_compact_thread(job, w->log);

    ev.data = w;
    ngx_http_tokenrefresh_compact_done(&ev);
}


static void
ngx_http_tokenrefresh_compact_thread(void *data, ngx_log_t *log)
{
    ngx_http_tokenrefresh_journal_compact(data);
}


static void
ngx_http_tokenrefresh_compact_done(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_writer_t *w = ev->data;

    ngx_http_tokenrefresh_job_t  *job;

    job = w->cjob;
    w->compacting = 0;

    ngx_http_tokenrefresh_journal_held(w);

    if (job->compacted == NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, w->log, 0,
                      "tokenrefresh: the journal of zone \"%V\" (%ui "
                      "frames) was compacted into \"%V\": %ui credentials, "
                      "%ui of them users' sessions",
                      &w->zone->shm_zone->shm.name, job->frames_merged,
                      &w->zone->state->path, job->count, job->sessions);

    } else if (job->compacted == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, w->log, job->compact_err,
                      "tokenrefresh: the journal of zone \"%V\" could not be "
                      "compacted: %s; it is kept, and read at the next start",
                      &w->zone->shm_zone->shm.name, job->compact_failed);
    }
}


/*
 * In a thread, once the journal has grown as large as the snapshot: the
 * journal becomes .journal.old (under byte 0, so that no append is lost),
 * and the snapshot and .old merge into a new snapshot (under byte 1).  An
 * .old left by a compaction that did not finish is merged first.
 */

static void
ngx_http_tokenrefresh_journal_compact(ngx_http_tokenrefresh_job_t *job)
{
    ngx_fd_t                        lock;
    ngx_file_info_t                 fi;
    ngx_http_tokenrefresh_mark_t    mark;
    ngx_http_tokenrefresh_merge_t   m;
    ngx_http_tokenrefresh_state_t  *st;

    st = job->zone->state;

    job->compacted = NGX_ERROR;

    lock = open((char *) st->lock.data,
                O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC, 0600);
    if (lock == NGX_INVALID_FILE) {
        job->compact_failed = "open() of the lock file";
        job->compact_err = ngx_errno;
        return;
    }

    if (ngx_http_tokenrefresh_lock_range(lock, 1, F_WRLCK) != NGX_OK) {
        job->compact_failed = "locking the snapshot";
        job->compact_err = ngx_errno;
        close(lock);
        return;
    }

    if (ngx_file_info(st->old.data, &fi) == NGX_FILE_ERROR) {

        if (ngx_http_tokenrefresh_lock_range(lock, 0, F_WRLCK) != NGX_OK) {
            job->compact_failed = "locking the journal";
            job->compact_err = ngx_errno;
            close(lock);
            return;
        }

        if (ngx_rename_file(st->journal.data, st->old.data)
            == NGX_FILE_ERROR)
        {
            if (ngx_errno == NGX_ENOENT) {
                /* another worker compacted it already */
                job->compacted = 0;
                close(lock);
                return;
            }

            job->compact_failed = "rename() of the journal";
            job->compact_err = ngx_errno;
            close(lock);
            return;
        }

        /* the next append starts a new journal: no end to keep */

        ngx_memzero(&mark, sizeof(ngx_http_tokenrefresh_mark_t));
        (void) ngx_http_tokenrefresh_mark(lock, &mark, 1);

        (void) ngx_http_tokenrefresh_lock_range(lock, 0, F_UNLCK);
    }

    ngx_memzero(&m, sizeof(ngx_http_tokenrefresh_merge_t));

    switch (ngx_http_tokenrefresh_compact_merge(job, &m)) {

    case NGX_OK:
        job->compacted = NGX_OK;
        job->count = m.count;
        job->sessions = m.sessions;
        job->frames_merged = m.frames;
        break;

    case NGX_DECLINED:
        job->compacted = 0;
        break;

    default:
        break;
    }

    ngx_http_tokenrefresh_merge_free(&m);

    close(lock);
}


/* where the last good append ended: read, or written (under byte 0) */

static ngx_int_t
ngx_http_tokenrefresh_mark(ngx_fd_t lock, ngx_http_tokenrefresh_mark_t *mark,
    ngx_uint_t write)
{
    ssize_t  n;

    if (write) {
        n = pwrite(lock, mark, sizeof(ngx_http_tokenrefresh_mark_t),
                   NGX_HTTP_TOKENREFRESH_MARK_AT);

    } else {
        n = pread(lock, mark, sizeof(ngx_http_tokenrefresh_mark_t),
                  NGX_HTTP_TOKENREFRESH_MARK_AT);
    }

    return (n == (ssize_t) sizeof(ngx_http_tokenrefresh_mark_t))
           ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_tokenrefresh_compact_merge(ngx_http_tokenrefresh_job_t *job,
    ngx_http_tokenrefresh_merge_t *m)
{
    u_char                         *file, *old, *sealed, *plain;
    size_t                          flen, olen, slen;
    ngx_int_t                       rc;
    ngx_str_t                       in;
    ngx_http_tokenrefresh_zone_t   *zone;
    ngx_http_tokenrefresh_state_t  *st;

    zone = job->zone;
    st = zone->state;
    file = NULL;
    old = NULL;
    sealed = NULL;
    plain = NULL;
    flen = 0;
    olen = 0;
    rc = NGX_ERROR;

    m->key = st->key;
    m->old_key = st->two_keys ? st->old_key : NULL;
    m->aad = st->journal_aad;
    m->max_token_size = zone->max_token_size;
    m->now = job->now;
    m->idle = zone->session_idle;
    m->lifetime = zone->session_lifetime;

    if (ngx_http_tokenrefresh_slurp(st->path.data, &file, &flen)
        == NGX_ERROR)
    {
        job->compact_failed = "reading the snapshot";
        job->compact_err = ngx_errno;
        goto done;
    }

    if (file) {
        if (flen < 4 || ngx_memcmp(file, "TRS1", 4) != 0) {
            job->compact_failed = "the snapshot is not a state file";
            goto done;
        }

        in.data = file + 4;
        in.len = flen - 4;

        /* OpenSSL wants the output apart from the input */

        plain = malloc(flen);
        if (plain == NULL) {
            job->compact_failed = "out of memory";
            goto done;
        }

        m->snapshot.data = plain;

        if (ngx_http_tokenrefresh_open_to(st->key, &st->aad, &in,
                                          &m->snapshot)
            != NGX_OK
            && (!st->two_keys
                || ngx_http_tokenrefresh_open_to(st->old_key, &st->aad, &in,
                                                 &m->snapshot)
                   != NGX_OK))
        {
            job->compact_failed = "the snapshot does not open";
            goto done;
        }
    }

    if (ngx_http_tokenrefresh_slurp(st->old.data, &old, &olen)
        == NGX_ERROR)
    {
        job->compact_failed = "reading the journal";
        job->compact_err = ngx_errno;
        goto done;
    }

    m->journal[0].data = old;
    m->journal[0].len = olen;

    if (file == NULL && olen == 0) {
        /* nothing to merge: never an empty snapshot over nothing */
        (void) unlink((char *) st->old.data);
        rc = NGX_DECLINED;
        goto done;
    }

    if (ngx_http_tokenrefresh_merge(m) != NGX_OK) {
        job->compact_failed = m->failed ? m->failed : "out of memory";
        goto done;
    }

    /*
     * a snapshot of credentials, no frame, and nothing left: that is not
     * what a merge can mean (expired sessions aside, which a zone of
     * nothing but expired sessions would show as well); the files stay
     */

    if (m->count == 0 && m->held > m->expired && m->frames == 0) {
        job->compact_failed = "the merge would leave nothing of a "
                              "snapshot that holds credentials";
        goto done;
    }

    slen = 4 + NGX_HTTP_TOKENREFRESH_SEALED_LEN(m->out.len);

    sealed = malloc(slen);
    if (sealed == NULL) {
        job->compact_failed = "out of memory";
        goto done;
    }

    ngx_memcpy(sealed, "TRS1", 4);

    if (ngx_http_tokenrefresh_seal_to(st->key, &st->aad, &m->out, sealed + 4)
        != NGX_OK)
    {
        job->compact_failed = "sealing the snapshot";
        goto done;
    }

    if (ngx_http_tokenrefresh_write_file(&st->path, sealed, slen, &st->dir,
                                         (ngx_uid_t) -1, (ngx_gid_t) -1)
        != NGX_OK)
    {
        job->compact_failed = "writing the snapshot";
        job->compact_err = ngx_errno;
        goto done;
    }

    /* the snapshot holds all of it now */

    (void) unlink((char *) st->old.data);
    (void) ngx_http_tokenrefresh_write_file(NULL, NULL, 0, &st->dir,
                                            (ngx_uid_t) -1, (ngx_gid_t) -1);

    rc = NGX_OK;

done:

    if (file) {
        ngx_explicit_memzero(file, flen);
        free(file);
    }

    if (plain) {
        ngx_explicit_memzero(plain, flen);
        free(plain);
    }

    if (old) {
        free(old);
    }

    free(sealed);

    return rc;
}


/*
 * When a zone is created, in the master: the merged state becomes the
 * snapshot and the journals go, so that a state file kept aside, or
 * copied by an operator, is all of the state.
 */

ngx_int_t
ngx_http_tokenrefresh_journal_fold(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *content, ngx_log_t *log)
{
    u_char                         *sealed;
    size_t                          len;
    ngx_fd_t                        lock;
    ngx_int_t                       rc;
    ngx_uid_t                       owner;
    ngx_gid_t                       group;
    ngx_core_conf_t                *ccf;
    ngx_http_tokenrefresh_mark_t    mark;
    ngx_http_tokenrefresh_state_t  *st;

    st = zone->state;
    rc = NGX_ERROR;

    /*
     * the master may run as root: the workers compact this snapshot
     * later, as the "user" of the configuration, and must read it
     */

    ccf = (ngx_core_conf_t *) ngx_get_conf(st->cycle->conf_ctx,
                                           ngx_core_module);
    owner = (geteuid() == 0 && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT)
            ? ccf->user : (ngx_uid_t) -1;
    group = (owner != (ngx_uid_t) -1) ? ccf->group : (ngx_gid_t) -1;

    len = 4 + NGX_HTTP_TOKENREFRESH_SEALED_LEN(content->len);

    sealed = ngx_alloc(len, log);
    if (sealed == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(sealed, "TRS1", 4);

    lock = open((char *) st->lock.data,
                O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC, 0600);

    if (lock != -1 && owner != (ngx_uid_t) -1
        && fchown(lock, owner, group) == -1)
    {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "tokenrefresh: fchown(\"%s\") failed", st->lock.data);
    }

    if (lock == -1
        || ngx_http_tokenrefresh_lock_range(lock, 1, F_WRLCK) != NGX_OK
        || ngx_http_tokenrefresh_lock_range(lock, 0, F_WRLCK) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot lock \"%s\"", st->lock.data);
        goto done;
    }

    if (ngx_http_tokenrefresh_seal_to(st->key, &st->aad, content, sealed + 4)
        != NGX_OK
        || ngx_http_tokenrefresh_write_file(&st->path, sealed, len, &st->dir,
                                            owner, group)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot write \"%V\"; its journal is "
                      "kept", &st->path);
        goto done;
    }

    (void) unlink((char *) st->old.data);
    (void) unlink((char *) st->journal.data);
    (void) ngx_http_tokenrefresh_write_file(NULL, NULL, 0, &st->dir,
                                            (ngx_uid_t) -1, (ngx_gid_t) -1);

    /* no journal: no end of one to keep */
    ngx_memzero(&mark, sizeof(ngx_http_tokenrefresh_mark_t));
    (void) ngx_http_tokenrefresh_mark(lock, &mark, 1);

    rc = NGX_OK;

done:

    if (lock != -1) {
        close(lock);
    }

    ngx_explicit_memzero(sealed, len);
    ngx_free(sealed);

    return rc;
}


/*
 * A new file at path, atomically: a temporary file, its data synced, the
 * rename, the directory synced; with path NULL, only the directory.
 */

static ngx_int_t
ngx_http_tokenrefresh_write_file(ngx_str_t *path, u_char *data, size_t len,
    ngx_str_t *dir, ngx_uid_t owner, ngx_gid_t group)
{
    int        fd;
    u_char     tmp[NGX_MAX_PATH];
    ssize_t    n;
    ngx_err_t  err;

    if (path) {
        if (path->len + sizeof(".compact.tmp") + NGX_INT64_LEN
            > NGX_MAX_PATH)
        {
            return NGX_ERROR;
        }

        ngx_sprintf(tmp, "%V.%P.compact.tmp%Z", path, ngx_pid);

        (void) unlink((char *) tmp);

        fd = open((char *) tmp,
                  O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600);
        if (fd == -1) {
            return NGX_ERROR;
        }

        n = write(fd, data, len);

        if (n != (ssize_t) len
            || (owner != (ngx_uid_t) -1 && fchown(fd, owner, group) == -1)
            || fsync(fd) == -1)
        {
            err = ngx_errno;
            close(fd);
            (void) unlink((char *) tmp);
            ngx_set_errno(err);
            return NGX_ERROR;
        }

        close(fd);

        if (rename((char *) tmp, (char *) path->data) == -1) {
            err = ngx_errno;
            (void) unlink((char *) tmp);
            ngx_set_errno(err);
            return NGX_ERROR;
        }
    }

    fd = open((char *) dir->data, O_RDONLY|O_CLOEXEC);

    if (fd != -1) {
        (void) fsync(fd);
        close(fd);
    }

    return NGX_OK;
}


/* a whole file into malloc()ed memory; *data NULL if there is no file */

static ngx_int_t
ngx_http_tokenrefresh_slurp(u_char *path, u_char **data, size_t *len)
{
    int              fd;
    u_char          *p;
    ssize_t          n;
    ngx_err_t        err;
    ngx_file_info_t  fi;

    *data = NULL;
    *len = 0;

    fd = open((char *) path, O_RDONLY|O_NOFOLLOW|O_CLOEXEC);

    if (fd == -1) {
        return (ngx_errno == NGX_ENOENT) ? NGX_DECLINED : NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || !ngx_is_file(&fi)
        || ngx_file_size(&fi) > NGX_HTTP_TOKENREFRESH_MAX_FILE)
    {
        close(fd);
        ngx_set_errno(NGX_EINVAL);
        return NGX_ERROR;
    }

    p = malloc(ngx_file_size(&fi) + 1);
    if (p == NULL) {
        close(fd);
        return NGX_ERROR;
    }

    n = ngx_http_tokenrefresh_read_all(fd, p, ngx_file_size(&fi));
    err = ngx_errno;

    close(fd);

    if (n != ngx_file_size(&fi)) {
        free(p);
        ngx_set_errno(err);
        return NGX_ERROR;
    }

    *data = p;
    *len = n;

    return NGX_OK;
}


static ssize_t
ngx_http_tokenrefresh_read_all(ngx_fd_t fd, u_char *buf, size_t len)
{
    ssize_t  n;
    size_t   got;

    for (got = 0; got < len; got += n) {
        n = read(fd, buf + got, len - got);

        if (n <= 0) {
            return (n == 0) ? (ssize_t) got : -1;
        }
    }

    return got;
}


/* a journal file for the zone's creation, in the master: through the log */

ngx_int_t
ngx_http_tokenrefresh_journal_read(ngx_str_t *path, u_char **data,
    size_t *len, ngx_log_t *log)
{
    int        fd;
    ngx_int_t  rc;

    rc = ngx_http_tokenrefresh_slurp(path->data, data, len);

    if (rc == NGX_OK && !ngx_test_config) {
        /* sealed, but nobody else's business: as the snapshot */

        fd = open((char *) path->data, O_RDONLY|O_NOFOLLOW);

        if (fd != -1) {
            (void) fchmod(fd, 0600);
            close(fd);
        }
    }

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot read the journal \"%V\"", path);
    }

    return rc;
}


ngx_int_t
ngx_http_tokenrefresh_lock_range(ngx_fd_t fd, ngx_uint_t byte,
    ngx_uint_t type)
{
    struct flock  fl;

    ngx_memzero(&fl, sizeof(struct flock));

    fl.l_type = (short) type;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;

    /* nginx's signal handlers do not restart system calls */

#if defined(F_OFD_SETLKW)
    while (fcntl(fd, F_OFD_SETLKW, &fl) == -1) {
#else
    while (fcntl(fd, F_SETLKW, &fl) == -1) {
#endif
        if (ngx_errno != NGX_EINTR) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
