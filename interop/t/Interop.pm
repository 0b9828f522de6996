# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

package t::Interop;

# Test::Nginx glue for the interop suite: ngx_http_tokenrefresh_module
# against a real OpenID provider (interop/provider.js: panva's
# oidc-provider) and a resource server that verifies RFC 9068 JWT access
# tokens (interop/resource.js).
#
# Load it FIRST in a test file (it chooses the ports before Test::Nginx
# reads them), then Test::Nginx::Socket:
#
#     use lib '.';
#     use t::Interop;
#     use Test::Nginx::Socket 'no_plan';
#
# Run the files from interop/ (servroot is interop/t/servroot), as
# scripts/interop.sh does.  Loading this module
#   - uses the provider and the API at INTEROP_OP_PORT (39850) and
#     INTEROP_API_PORT (39860) if they answer (scripts/interop.sh starts
#     them), otherwise starts them for this file, with client keys made by
#     openssl in a temporary directory, and stops them at the end;
#   - sets for the configurations: TEST_NGINX_PORT (3984 unless set),
#     $TEST_NGINX_OP_PORT, $TEST_NGINX_API_PORT, $TEST_NGINX_KEYS (the
#     client keys: rs256.pem, es256.pem, hs256.secret), $TEST_NGINX_RESOURCE
#     and $TEST_NGINX_RESOURCE_FORM (the API's resource indicator, plain and
#     form-encoded), $TEST_NGINX_STATE_DIR (a temporary directory);
#   - prepends to every block's http_config two upstreams:
#         upstream op  { server 127.0.0.1:$TEST_NGINX_OP_PORT; }
#         upstream api { server 127.0.0.1:$TEST_NGINX_API_PORT; keepalive 16; }
#     and appends to its config "location = /opcalls" (the provider's
#     /admin/calls line) and "location = /status" (tokenrefresh_status
#     write=on);
#   - resets the provider's access token lifetimes (op_ttl) when the file
#     starts, and the provider's and the API's counters (and the API's
#     revocations, the provider's delay) before every block;
#   - exports the helpers below to the test file and to "--- init" code.

BEGIN {
    # the main suite uses 1984 and 19850-19880; this one stays clear of it
    $ENV{TEST_NGINX_PORT} ||= 3984;
}

use strict;
use warnings;

use Test::Nginx::Socket;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp ();
use HTTP::Tiny;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

my $dir;       # interop/
my $top;       # the repository

BEGIN {
    $dir = dirname(dirname(abs_path(__FILE__)));
    $top = dirname($dir);
}

use lib "$top/t/lib";
use TokenRefresh::Client ();

my $op_port  = $ENV{INTEROP_OP_PORT}  // 39850;
my $api_port = $ENV{INTEROP_API_PORT} // 39860;
my $op       = "http://127.0.0.1:$op_port";
my $api      = "http://127.0.0.1:$api_port";
my $resource = "http://127.0.0.1:$api_port/";
my $node     = $ENV{INTEROP_NODE} || 'node';

my $json = JSON::PP->new->canonical;
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0);

my $tmp = File::Temp::tempdir('tokenrefresh-interop-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);

sub form_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

$ENV{TEST_NGINX_OP_PORT} = $op_port;
$ENV{TEST_NGINX_API_PORT} = $api_port;
$ENV{TEST_NGINX_RESOURCE} = $resource;
$ENV{TEST_NGINX_RESOURCE_FORM} = form_escape($resource);
$ENV{TEST_NGINX_STATE_DIR} = $tmp;

# ------------------------------------------------------------ the servers

my @spawned;
my $owner = $$;     # forked children must not stop the servers

sub answers {
    my ($url) = @_;
    my $res = HTTP::Tiny->new(timeout => 2)->get($url);
    return $res->{status} == 200;
}

sub spawn {
    my (@cmd) = @_;
    my $log = "$tmp/" . (split m{/}, $cmd[1])[-1] . '.log';
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', $log or die "$log: $!";
        open STDERR, '>&', \*STDOUT;
        chdir $dir;
        exec @cmd;
        die "exec $cmd[0]: $!";
    }
    push @spawned, $pid;
    return $pid;
}

sub make_keys {
    my ($kdir) = @_;
    my @cmds = (
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $kdir/rs256.pem",
        "openssl pkey -in $kdir/rs256.pem -pubout -out $kdir/rs256.pub.pem",
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $kdir/es256.pem",
        "openssl pkey -in $kdir/es256.pem -pubout -out $kdir/es256.pub.pem",
        "openssl rand -hex 32 > $kdir/hs256.secret",
    );
    for (@cmds) {
        system("umask 077; $_ 2>/dev/null") == 0 or die "$_ failed";
    }
}

sub start_servers {
    if (answers("$op/admin/health") && answers("$api/admin/health")) {
        $ENV{INTEROP_KEYS} or die "the provider runs, but INTEROP_KEYS "
                                . "(its clients' keys) is not set\n";
        return;
    }

    my $kdir = $ENV{INTEROP_KEYS} // "$tmp/keys";
    if (!-f "$kdir/rs256.pem") {
        mkdir $kdir, 0700;
        make_keys($kdir);
    }
    $ENV{INTEROP_KEYS} = $kdir;

    -d "$dir/node_modules/oidc-provider"
        or die "interop/node_modules is missing: run scripts/interop.sh "
             . "(or npm ci in interop/)\n";

    spawn($node, "$dir/provider.js", '--port', $op_port, '--keys', $kdir,
          '--resource', $resource);
    spawn($node, "$dir/resource.js", '--port', $api_port, '--issuer', $op,
          '--resource', $resource);

    wait_until(sub { answers("$op/admin/health") && answers("$api/admin/health") },
               20)
        or die "the provider or the API did not start; logs in $tmp\n";
}

sub stop_servers {
    return unless $$ == $owner;
    for my $pid (@spawned) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
    @spawned = ();
}

# ------------------------------------------------------------ helpers

sub wait_until {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return 0 if time > $deadline;
        sleep 0.02;
    }
}

sub get_json {
    my ($url) = @_;
    my $res = $http->get($url);
    die "GET $url: $res->{status} $res->{content}" unless $res->{success};
    return $json->decode($res->{content});
}

sub post_json {
    my ($url, $data) = @_;
    my $res = $http->request('POST', $url,
                             { content => $json->encode($data // {}),
                               headers => { 'Content-Type' => 'application/json' } });
    die "POST $url: $res->{status} $res->{content}" unless $res->{success};
    return $json->decode($res->{content});
}

# the provider
sub op_stats    { return get_json("$op/admin/stats") }
sub op_requests { return get_json("$op/admin/requests") }
sub op_grants   { return get_json("$op/admin/grants") }
sub op_reset    { return post_json("$op/admin/reset") }
sub op_revoke   { return post_json("$op/admin/revoke", { @_ }) }

# op_ttl(default => 300, 'crm-gateway' => 3): access token lifetimes
sub op_ttl { return post_json("$op/admin/config", { ttl => { @_ } }) }

# op_delay(1500): token requests wait that long (ms) at the provider
sub op_delay { return post_json("$op/admin/config", { delay_ms => $_[0] }) }

sub op_calls {
    my $res = $http->get("$op/admin/calls");
    chomp(my $line = $res->{content});
    return $line;
}

# the API
sub api_stats  { return get_json("$api/admin/stats") }
sub api_reset  { return post_json("$api/admin/reset") }
sub api_revoke { return post_json("$api/admin/revoke", { @_ }) }
sub api_reject { return post_json("$api/admin/reject", { on => $_[0] ? JSON::PP::true : JSON::PP::false }) }

# a token the provider issued directly (not through nginx), for checks
sub op_token {
    my (%form) = @_;
    my $body = join '&', map { "$_=" . form_escape($form{$_}) } sort keys %form;
    my $res = $http->request('POST', "$op/token", {
        content => $body,
        headers => { 'Content-Type' => 'application/x-www-form-urlencoded' } });
    return { status => $res->{status},
             %{ (eval { $json->decode($res->{content}) } // {}) } };
}

# login_seed('alice'): a scripted authorization-code + PKCE login with
# consent to offline_access (interop/login.js); returns the refresh token
sub login_seed {
    my ($account) = @_;
    my $cmd = "cd '$dir' && '$node' login.js --issuer $op --account '$account' "
            . "--resource $resource";
    my $rt = `$cmd`;
    die "login.js failed for $account (status $?)\n" if $? || !$rt;
    chomp $rt;
    return $rt;
}

# put('name', $content [, $mode]): a file in the state directory, 0600
sub put {
    my ($name, $content, $mode) = @_;
    my $f = "$tmp/$name";
    unlink $f;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $content;
    close $fh;
    chmod $mode // 0600, $f;
    return $f;
}

sub random_key { join '', map { sprintf '%02x', int rand 256 } 1 .. 32 }

# hit(GET => '/api/a'): one request to nginx; returns the HTTP::Tiny
# answer with "json" (the decoded body, if any) and "elapsed"
sub hit {
    my ($method, $uri, %o) = @_;
    my $port = $Test::Nginx::Util::ServerPortForClient;
    my $t0 = time;
    my $res = $http->request($method, "http://127.0.0.1:$port$uri",
                             { headers => $o{headers} // {},
                               defined $o{body} ? (content => $o{body}) : () });
    $res->{elapsed} = time - $t0;
    $res->{json} = eval { $json->decode($res->{content}) };
    return $res;
}

# storm(n => 30, uri => '/api/x'): n requests at once (each its own
# connection), every answer with status, headers, body, json
sub storm {
    my (%o) = @_;
    my $n = $o{n} // 30;
    my @reqs = map { { method => 'GET', uri => "$o{uri}$_" } } 1 .. $n;
    my @res = TokenRefresh::Client::storm(
        requests => \@reqs, timeout => $o{timeout} // 30,
        port => $Test::Nginx::Util::ServerPortForClient);
    for (@res) {
        $_->{json} = eval { $json->decode($_->{body}) };
    }
    return @res;
}

# fire(GET => '/api/a'): sends a request and returns at once;
# collect($handle) reads the answer
sub fire {
    my ($method, $uri) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $Test::Nginx::Util::ServerPortForClient,
                                  Timeout => 5)
        or die "fire: connect: $!";
    $s->autoflush(1);
    print $s "$method $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    return { sock => $s, start => time };
}

sub collect {
    my ($h, $timeout) = @_;
    my $s = $h->{sock};
    my $in = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + ($timeout // 20);
    while (time < $deadline) {
        next unless $sel->can_read(0.5);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $in .= $buf;
    }
    close $s;
    my $r = TokenRefresh::Client::parse_response($in);
    $r->{elapsed} = time - $h->{start};
    return $r;
}

# the module's status page, for one credential
sub status_of {
    my ($zone, $cred) = @_;
    my $s = hit(GET => '/status')->{json} or return undef;
    return $s->{zones}{$zone}{credentials}{$cred};
}

# no refresh or login of the credential in flight, in any worker
sub settled {
    my ($zone, $cred) = @_;
    return wait_until(sub {
        my $c = status_of($zone, $cred);
        return $c && !$c->{refreshing} && $c->{state} ne 'refreshing';
    }, 10);
}

sub error_log_since {
    my ($offset) = @_;
    open my $fh, '<', $Test::Nginx::Util::ErrLogFile or return ();
    seek $fh, $offset // 0, 0;
    my @lines = <$fh>;
    close $fh;
    return @lines;
}

sub error_log_size { return -s $Test::Nginx::Util::ErrLogFile // 0 }

# the distinct worker pids among error log lines that match a pattern
sub pids_in {
    my ($re, @lines) = @_;
    my %pids;
    for (@lines) {
        $pids{$1} = 1 if /\[\w+\] (\d+)#\d+: .*$re/;
    }
    return sort keys %pids;
}

# ------------------------------------------------- nginx, as t/TokenRefresh.pm

sub master_pid {
    open my $fh, '<', $Test::Nginx::Util::PidFile or return undef;
    my $pid = <$fh>;
    close $fh;
    chomp $pid if defined $pid;
    return $pid;
}

sub alive {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh>;
    close $fh;
    return $stat !~ /^\d+ \(.*\) [ZX] /;
}

sub worker_pids {
    my $master = master_pid() or return ();
    my @pids;
    for my $d (glob '/proc/[0-9]*') {
        open my $fh, '<', "$d/stat" or next;
        my $stat = <$fh>;
        close $fh;
        my ($pid, $ppid) = $stat =~ /^(\d+) \(.*\) \S (\d+)/ or next;
        push @pids, $pid if $ppid == $master;
    }
    return sort @pids;
}

sub worker_count {
    return ($Test::Nginx::Util::MasterProcessEnabled // 'on') eq 'on'
           ? $Test::Nginx::Util::Workers // 1 : 0;
}

sub start_nginx {
    my $old = master_pid();
    my $cmd = "$Test::Nginx::Util::NginxBinary "
            . "-p $Test::Nginx::Util::ServRoot/ "
            . "-c $Test::Nginx::Util::ConfFile";
    system($cmd) == 0 or die "nginx did not start: $cmd";
    wait_until(sub {
        my $m = master_pid();
        my @w = worker_pids();
        return $m && (!$old || $m != $old || !alive($old)) && alive($m)
               && @w >= worker_count();
    }, 20) or die "nginx did not start";
}

sub stop_nginx {
    my ($how) = @_;
    my $master = master_pid() or die "no nginx master";
    my @procs = ($master, worker_pids());
    if (($how // 'QUIT') eq 'KILL') {
        kill 'KILL', @procs;
    } else {
        kill 'QUIT', $master;
    }
    wait_until(sub { !grep { alive($_) } @procs }, 20)
        or die "nginx did not stop";
}

sub restart_nginx {
    my ($how) = @_;
    stop_nginx($how);
    start_nginx();
}

sub reload_nginx {
    my %old = map { $_ => 1 } worker_pids();
    kill 'HUP', master_pid();
    wait_until(sub {
        my @now = worker_pids();
        return @now >= worker_count() && !grep { $old{$_} } @now;
    }, 20) or die "the reload did not finish";
}

# ------------------------------------------------------------ export

my @helpers = qw(wait_until op_stats op_requests op_grants op_reset op_revoke
                 op_ttl op_delay op_calls op_token pids_in api_stats api_reset api_revoke
                 api_reject fire collect login_seed put random_key hit storm status_of
                 settled error_log_since error_log_size master_pid alive
                 worker_pids start_nginx stop_nginx restart_nginx
                 reload_nginx form_escape);

for my $f (@helpers) {
    no strict 'refs';
    *{"main::$f"} = \&$f;
    *{"Test::Nginx::Util::$f"} = \&$f;
}

{
    no strict 'refs';
    no warnings 'redefine';
    *{"Test::Nginx::Util::time"} = \&Time::HiRes::time;
    *{"main::time"} = \&Time::HiRes::time;
    *{"Test::Nginx::Util::sleep"} = \&Time::HiRes::sleep;
    *{"main::sleep"} = \&Time::HiRes::sleep;
    for my $f (qw(ok is isnt like unlike cmp_ok is_deeply diag note pass
                  fail skip explain))
    {
        *{"Test::Nginx::Util::$f"} = \&{"Test::More::$f"}
            unless defined &{"Test::Nginx::Util::$f"};
        *{"main::$f"} = \&{"Test::More::$f"} unless defined &{"main::$f"};
    }
}

add_block_preprocessor(sub {
    my $block = shift;

    return if $block->must_die;

    $block->set_value('http_config', <<'_EOC_' . ($block->http_config // ''));
    upstream op  { server 127.0.0.1:$TEST_NGINX_OP_PORT; }
    upstream api { server 127.0.0.1:$TEST_NGINX_API_PORT; keepalive 16; }
_EOC_

    $block->set_value('config', ($block->config // '') . <<'_EOC_');
    location = /opcalls {
        proxy_pass http://op/admin/calls;
    }

    location = /status {
        tokenrefresh_status write=on;
    }
_EOC_

    $block->set_value('init', 'op_reset(); api_reset(); '
                              . ($block->init // ''));
});

check_accum_error_log();

start_servers();

$ENV{TEST_NGINX_KEYS} = $ENV{INTEROP_KEYS};

# a test file starts with the provider's default lifetimes, whatever the
# files before it set
post_json("$op/admin/config", { reset_ttl => JSON::PP::true, delay_ms => 0 });

add_cleanup_handler(sub { stop_servers() });

END { stop_servers() }

1;
