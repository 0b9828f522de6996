#!/usr/bin/perl
# Benchmarks for ngx_http_tokenrefresh_module, each measured side by side
# with its baseline in the same run, in interleaved rounds, reported as
# medians of per-round ratios with their spread.  See docs/benchmarks.md.
#
#   1. steady state: wrk through a proxied location with the module, with a
#      hard-coded Authorization header (the ceiling), and with an
#      OpenResty-style Lua attach step (if Debian's lua module is there);
#   2. storm: 1000 concurrent requests meet a revoked token, against the
#      same burst with a valid token; provider calls, successes, latency;
#      and how soon a waiting request in another worker resumes once the
#      token is stored;
#   3. scaling: 1, 100 and 10,000 credentials, 1 KB and 8 KB tokens;
#      memory per credential;
#   4. sessions: a request with a user's session handle, among 100,000 live
#      sessions, against a request with one named credential: instructions
#      per request under callgrind, and throughput.
#
# Usage: bench/bench.pl [--rounds N] [--steady-rounds N] [--seconds S]
#                        [--sessions N] [--session-rounds N]
#                        [--only steady|storm|scaling|sessions] [--out DIR]
#
# BENCH_PORT=P: the front nginx listens on P, the upstream on P+1, the mock
# provider on P+2 and P+3, nginx under callgrind on P+10.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use strict;
use warnings;

use FindBin qw($Bin);
use lib "$Bin/../t/lib";
use TokenRefresh::Client qw(storm);
use Getopt::Long;
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use Digest::SHA ();
use List::Util qw(min max);
use IO::Socket::INET;

my $top = "$Bin/..";
# Throughput on a shared machine drifts over seconds: many short,
# interleaved runs give a steadier median than a few long ones.
my ($rounds, $seconds, $out, $only) = (7, 2, "$top/build/bench", '');
my $steady_rounds = 21;
my ($sessions, $session_rounds) = (100_000, 11);
GetOptions('rounds=i' => \$rounds, 'seconds=f' => \$seconds,
           'steady-rounds=i' => \$steady_rounds,
           'sessions=i' => \$sessions, 'session-rounds=i' => \$session_rounds,
           'out=s' => \$out, 'only=s' => \$only) or die "usage\n";

# BENCH_SO: another build of the module, to compare with (docs/benchmarks.md)
my $so = $ENV{BENCH_SO} // "$top/build/ngx_http_tokenrefresh_module.so";
my $nginx = $ENV{NGINX} // '/usr/sbin/nginx';
my $lua = -f '/usr/lib/nginx/modules/ngx_http_lua_module.so'
          && -f '/usr/lib/nginx/modules/ndk_http_module.so';

my %port = (front => 18180, up => 18181, idp => 18850, api => 18860);
if (my $p = $ENV{BENCH_PORT}) {
    %port = (front => $p, up => $p + 1, idp => $p + 2, api => $p + 3);
}
my $http = HTTP::Tiny->new(timeout => 30);
my $json = JSON::PP->new->canonical->pretty;

system("rm -rf $out && mkdir -p $out/front/logs $out/up/logs") == 0
    or die "mkdir $out";

my @pids;
$SIG{INT} = $SIG{TERM} = sub { cleanup(); exit 1 };
END { cleanup() }

sub cleanup {
    for my $p ("$out/front/logs/nginx.pid", "$out/up/logs/nginx.pid") {
        next unless -f $p;
        open my $fh, '<', $p or next;
        my $pid = <$fh>;
        kill 'QUIT', $pid if $pid;
        unlink $p;
    }
    kill 'TERM', @pids if @pids;
    @pids = ();
}

# a hard-coded header the size of the module's: "Bearer at-1-<24 hex>"
my $hard = 'Bearer at-1-' . ('0123456789abcdef' x 2) =~ s/^(.{24}).*/$1/r;

sub median {
    my @v = sort { $a <=> $b } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub pct {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[int($p / 100 * $#v + 0.5)];
}

sub say { print @_, "\n"; }

sub mock {
    my ($path, $data) = @_;
    my $r = $http->request('POST', "http://127.0.0.1:$port{idp}/_mock/$path",
                           { content => encode_json($data // {}) });
    die "mock $path: $r->{status}" unless $r->{success};
}

sub calls {
    my $r = $http->get("http://127.0.0.1:$port{idp}/_mock/calls");
    chomp(my $c = $r->{content});
    return $c;
}

sub write_file {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
}

# the upstream: a separate nginx answering at once
# On a small machine the three compete for CPUs, and throughput mostly
# measures the scheduler.  The nginx under test gets CPU 0 to itself and
# is the bottleneck; the upstream and wrk share the other CPU.
my $ncpu = `nproc` + 0;
my $pin = $ncpu >= 2;
my $front_affinity = $pin ? "worker_cpu_affinity 01 01;" : '';
my $up_affinity = $pin ? "worker_cpu_affinity 10;" : '';
my $wrk_cpus = $pin ? 'taskset -c 1-' . ($ncpu - 1) . ' ' : '';

write_file("$out/up/nginx.conf", <<"EOF");
worker_processes 1;
$up_affinity
error_log $out/up/logs/error.log warn;
pid $out/up/logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$port{up} reuseport backlog=4096;
        keepalive_requests 100000;
        location / { return 200 "ok\\n"; }
    }
}
EOF

# users' sessions: a 512-byte node, a chunk and the mock's two tokens of
# about 34 bytes take about 700 bytes (docs/benchmarks.md, "Memory per
# session"); 1 KB each, and room to spare: a full zone would end sessions
# whose handles the bench holds
my $users_mb = int($sessions * 1024 / 2**20) + 16;

my $lua_load = $lua ? "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
                      . "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n" : "";
my $lua_http = $lua ? <<"EOF" : '';
    lua_shared_dict luatokens 1m;
    init_by_lua_block {
        ngx.shared.luatokens:set("bench", "$hard")
    }
EOF
my $lua_loc = $lua ? <<'EOF' : '';
        # the same attach step in Lua: a shared dict read per request
        location /lua/ {
            set_by_lua_block $lua_auth {
                return ngx.shared.luatokens:get("bench")
            }
            proxy_set_header Authorization $lua_auth;
            proxy_pass http://up;
        }
EOF

write_file("$out/front/nginx.conf", <<"EOF");
load_module $so;
$lua_load
worker_processes 2;
$front_affinity
worker_rlimit_nofile 20000;
error_log $out/front/logs/error.log warn;
pid $out/front/logs/nginx.pid;
events { worker_connections 8192; }

http {
    access_log off;
    client_body_temp_path $out/front/body;
    proxy_temp_path $out/front/proxy;

    tokenrefresh_zone tokens:64m;
    tokenrefresh_zone users:${users_mb}m session_idle=1h session_lifetime=1d;
$lua_http
    map "" \$kb { default "@{[ 'a' x 1000 ]}"; }

    log_format wake '\$pid \$msec \$request_time \$tokenrefresh_wait_time '
                    '\$tokenrefresh_outcome \$status';

    upstream up  { server 127.0.0.1:$port{up}; keepalive 64; }
    upstream idp { server 127.0.0.1:$port{idp}; }
    upstream api { server 127.0.0.1:$port{api}; keepalive 64; }

    proxy_http_version 1.1;
    proxy_set_header Connection "";

    server {
        listen 127.0.0.1:$port{front} reuseport backlog=4096;
        keepalive_requests 100000;

        # the ceiling: a fixed header, no logic
        location /fix/ {
            proxy_set_header Authorization "$hard";
            proxy_pass http://up;
        }

        # the baselines of the scaling runs: the same URIs as /many/, fixed
        # headers of 30 bytes, 1 KB and 8 KB (a parameter of the
        # configuration is at most 4 KB: 1 KB pieces from a map)
        location /fix0/ {
            proxy_set_header Authorization "$hard";
            proxy_pass http://up;
        }

        location /fixk/ {
            proxy_set_header Authorization "${hard}\$kb";
            proxy_pass http://up;
        }

        location /fixe/ {
            proxy_set_header Authorization "${hard}\$kb\$kb\$kb\$kb\$kb\$kb\$kb\$kb";
            proxy_pass http://up;
        }

        location /mod/ {
            tokenrefresh tokens bench;
            tokenrefresh_login /_login;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://up;
        }
$lua_loc
        # many credentials: c=<name> selects one
        location /many/ {
            tokenrefresh tokens \$arg_c;
            tokenrefresh_login /_login;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://up;
        }

        # storms go to the mock API, which checks the tokens
        location /storm/ {
            access_log $out/front/logs/wake.log wake;
            tokenrefresh tokens \$arg_c;
            tokenrefresh_login /_login;
            tokenrefresh_refresh /_refresh;
            tokenrefresh_min_token_age 0;
            tokenrefresh_wait_timeout 30s;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://api;
        }

        # a user's session: the handle in a header (a native app's), the
        # same upstream as /mod/
        location /ses/ {
            tokenrefresh_session users;
            tokenrefresh_session_header X-Session;
            tokenrefresh_session_cookie off;
            tokenrefresh_refresh /_srefresh;
            tokenrefresh_json_access_token /token;
            tokenrefresh_json_refresh_token /refreshToken;
            proxy_set_header Authorization \$tokenrefresh_authorization;
            proxy_pass http://up;
        }

        # the app's login (the mock's custom login API): a new session
        location = /login {
            tokenrefresh_session_login users;
            tokenrefresh_session_cookie off;
            tokenrefresh_session_handle_json session;
            tokenrefresh_json_access_token /token;
            tokenrefresh_json_refresh_token /refreshToken;
            tokenrefresh_json_expires_in /expiresIn;
            proxy_set_header Accept-Encoding "";
            proxy_pass http://idp/api/tokens;
        }

        location = /_srefresh {
            internal;
            tokenrefresh_json_access_token /token;
            tokenrefresh_json_refresh_token /refreshToken;
            proxy_set_header Content-Type application/json;
            proxy_set_body '{"refreshToken":"\$tokenrefresh_refresh_token_json"}';
            proxy_pass http://idp/api/tokens/refresh;
        }

        location = /_login {
            internal;
            proxy_http_version 1.0;
            proxy_set_body "grant_type=client_credentials&client_id=\$tokenrefresh_credential";
            proxy_pass http://idp/token;
        }

        location = /_refresh {
            internal;
            proxy_http_version 1.0;
            proxy_set_body "grant_type=refresh_token&refresh_token=\$tokenrefresh_refresh_token_form";
            proxy_pass http://idp/token;
        }

        location = /status {
            tokenrefresh_status;
        }
    }
}
EOF

# start everything
{
    my $pid = fork // die "fork";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        exec $^X, "$top/t/lib/mock_server.pl", '--idp-port', $port{idp},
             '--api-port', $port{api};
    }
    push @pids, $pid;
}

for my $p ($port{idp}, $port{api}) {
    my $t0 = time;
    until (IO::Socket::INET->new(PeerAddr => "127.0.0.1:$p")) {
        die "the mock did not start" if time - $t0 > 10;
        sleep 0.05;
    }
}

for my $n ('up', 'front') {
    system($nginx, '-p', "$out/$n", '-c', "$out/$n/nginx.conf") == 0
        or die "nginx ($n) did not start: see $out/$n/logs/error.log";
}

my %result = (date => strftime('%Y-%m-%d %H:%M:%S UTC', gmtime),
              rounds => $rounds, steady_rounds => $steady_rounds,
              seconds => $seconds,
              machine => machine(), lua => $lua ? 1 : 0);

sub machine {
    my $cpu = `grep -m1 'model name' /proc/cpuinfo` =~ s/.*:\s*//r;
    chomp $cpu;
    my $n = `nproc`;
    chomp $n;
    my $v = `$nginx -v 2>&1` =~ s/.*nginx\///r;
    chomp $v;
    return "$n x $cpu, nginx $v, " . `uname -sr` =~ s/\n//r;
}

# wrk: requests per second and latency percentiles (ms)
sub wrk {
    my ($url, $script, $secs) = @_;
    $secs //= $seconds;
    my $cmd = "${wrk_cpus}wrk -t1 -c32 -d${secs}s --latency"
            . ($script ? " -s $script" : '') . " '$url' 2>&1";
    my $o = `$cmd`;
    my ($rps) = $o =~ /Requests\/sec:\s+([\d.]+)/ or die "wrk: $o";
    my %lat;
    while ($o =~ /^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)/mg) {
        $lat{$1} = $2 * { us => 0.001, ms => 1, s => 1000 }->{$3};
    }
    my ($non2xx) = $o =~ /Non-2xx or 3xx responses: (\d+)/;
    die "wrk: $non2xx non-2xx answers from $url\n" if $non2xx;
    return { rps => $rps, p50 => $lat{50}, p99 => $lat{99} };
}

sub get {
    my ($path) = @_;
    my $r = $http->get("http://127.0.0.1:$port{front}$path");
    die "GET $path: $r->{status}" unless $r->{status} == 200;
    return $r;
}

# --- 1. steady state -------------------------------------------------------

goto STORM if $only && $only ne 'steady';

say "== steady state: $steady_rounds rounds of $seconds s each, interleaved";

get('/mod/warm');                     # the login, before measuring
for my $v ('fix', 'mod', $lua ? 'lua' : ()) {
    wrk("http://127.0.0.1:$port{front}/$v/warm", undef, 1);
}

# paths of the same length: the request line costs the same
my @variants = ('fix', 'mod', $lua ? 'lua' : ());
my (%rps, %p50, %p99, @ratio, @ratio_lua);

for my $round (1 .. $steady_rounds) {
    # rotate the order, so that no variant always runs first
    my @order = @variants[map { ($_ + $round) % @variants } 0 .. $#variants];
    my %r;
    for my $v (@order) {
        $r{$v} = wrk("http://127.0.0.1:$port{front}/$v/x");
        push @{ $rps{$v} }, $r{$v}{rps};
        push @{ $p50{$v} }, $r{$v}{p50};
        push @{ $p99{$v} }, $r{$v}{p99};
    }
    push @ratio, $r{mod}{rps} / $r{fix}{rps};
    push @ratio_lua, $r{lua}{rps} / $r{fix}{rps} if $lua;
    printf "  round %d: fixed %.0f rps, module %.0f rps (%.3f)%s\n", $round,
           $r{fix}{rps}, $r{mod}{rps}, $ratio[-1],
           $lua ? sprintf(", lua %.0f rps (%.3f)", $r{lua}{rps},
                          $ratio_lua[-1]) : '';
}

$result{steady} = {
    map({ $_ => { rps => median(@{ $rps{$_} }), p50 => median(@{ $p50{$_} }),
                  p99 => median(@{ $p99{$_} }) } } @variants),
    ratio => { median => median(@ratio), min => (sort @ratio)[0],
               max => (sort @ratio)[-1], all => \@ratio },
    $lua ? (ratio_lua => { median => median(@ratio_lua),
                           min => (sort @ratio_lua)[0],
                           max => (sort @ratio_lua)[-1] }) : (),
};

printf "  module / hard-coded header: median %.3f (%.3f .. %.3f)\n",
       median(@ratio), (sort @ratio)[0], (sort @ratio)[-1];
printf "  lua / hard-coded header:    median %.3f (%.3f .. %.3f)\n",
       median(@ratio_lua), (sort @ratio_lua)[0], (sort @ratio_lua)[-1]
    if $lua;

# --- 1b. instructions per request ------------------------------------------
#
# Throughput on a small shared machine is noisy; instructions are not.  The
# same configuration in one process under callgrind, the same requests to
# each location, instructions counted per request.

# variants: the locations /V/ to measure (by default the steady state's);
# script: V => a wrk script for the requests of V; fill: a step run in the
# process before counting starts (nginx runs without instrumentation until
# then, several times faster); own: the variant whose own instructions are
# reported (the module's by default).
sub instructions {
    my (%o) = @_;
    my @vs = @{ $o{variants} // \@variants };
    my $script = $o{script} // {};
    my $port = $port{front} + 10;
    my $dir = "$out/" . ($o{dir} // 'cg');
    system("mkdir -p $dir/logs") == 0 or die;
    my $conf = do { local (@ARGV, $/) = "$out/front/nginx.conf"; <> };
    $conf =~ s/^worker_processes 2;/worker_processes 1;\nmaster_process off;\ndaemon off;/m;
    $conf =~ s/^worker_cpu_affinity.*$//m;
    $conf =~ s/listen 127\.0\.0\.1:$port{front}/listen 127.0.0.1:$port/;
    $conf =~ s{$out/front/}{$dir/}g;
    write_file("$dir/nginx.conf", $conf);

    my $pid = fork // die "fork";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/valgrind.log";
        open STDERR, '>&', \*STDOUT;
        exec 'valgrind', '--tool=callgrind', "--callgrind-out-file=$dir/cg.out",
             $o{fill} ? '--instr-atstart=no' : (),
             $nginx, '-p', $dir, '-c', "$dir/nginx.conf";
    }

    my $t0 = time;
    until (IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")) {
        die "nginx under callgrind did not start" if time - $t0 > 30;
        sleep 0.1;
    }

    if ($o{fill}) {
        $o{fill}->($port);
        system("callgrind_control -i on $pid > /dev/null 2>&1") == 0 or die;
    }

    my (%ir, %own);
    # five dumps per variant, interleaved; the median of each
    for my $v ((@vs) x 5) {
        my $s = $script->{$v} ? " -s $script->{$v}" : '';
        system("wrk -t1 -c4 -d1s$s http://127.0.0.1:$port/$v/warm > /dev/null");
        system("callgrind_control -z $pid > /dev/null 2>&1") == 0 or die;
        my $o = `wrk -t1 -c1 -d3s$s http://127.0.0.1:$port/$v/x`;
        my ($n) = $o =~ /(\d+) requests in/ or die "wrk: $o";
        die "wrk: non-2xx answers from /$v/ under callgrind\n"
            if $o =~ /Non-2xx or 3xx responses: [1-9]/;
        system("callgrind_control -d $pid > /dev/null 2>&1") == 0 or die;
        my ($dump) = sort { -M $a <=> -M $b } glob "$dir/cg.out.*";
        my $text = do { local (@ARGV, $/) = $dump; <> };
        my ($total) = $text =~ /^summary: (\d+)/m or die "no summary in $dump";
        push @{ $own{$v} }, own_instructions($text) / $n;
        # BENCH_KEEP_CG=1 keeps a dump per variant, for callgrind_annotate
        if ($ENV{BENCH_KEEP_CG}) { rename $dump, "$dir/$v.cg" } else { unlink $dump }
        push @{ $ir{$v} }, $total / $n;
        printf STDERR "    %s %.0f (%d requests)\n", $v, $total / $n, $n if $ENV{BENCH_VERBOSE};
    }

    $o{after}->($port) if $o{after};

    kill 'TERM', $pid;
    waitpid $pid, 0;

    return { (map { $_ => median(@{ $ir{$_} }) } @vs),
             own => median(@{ $own{ $o{own} // 'mod' } }),
             own_of => { map { $_ => median(@{ $own{$_} }) } @vs } };
}

# The module's own instructions in a callgrind dump: the self cost of its
# functions (what they call, nginx's and libc's, is not counted).  The
# whole request's count also moves with the state of glibc's malloc, which
# differs between two builds for reasons of their own: this one does not.
# A cost line that follows "calls=" is the call's inclusive cost.

sub own_instructions {
    my ($text) = @_;
    my ($fn, %name, $after_call);
    my $own = 0;

    for (split /\n/, $text) {
        if (/^fn=\((\d+)\)(?: (.*))?$/) {
            $name{$1} = $2 if defined $2;
            $fn = $name{$1} // '';
            next;
        }
        if (/^cfn=\((\d+)\) (.*)$/) { $name{$1} = $2; next }
        if (/^calls=/) { $after_call = 1; next }
        if (/^[+*-]?\d*\s+(\d+)$/) {
            my $cost = $1;
            $own += $cost if !$after_call && $fn =~ /^ngx_http_tokenrefresh_/;
            $after_call = 0;
        }
    }

    return $own;
}

if (system('which valgrind > /dev/null 2>&1') == 0) {
    my $ir = instructions();
    $result{instructions} = $ir;
    printf "  instructions per request: fixed %.0f, module %.0f (%+.1f%%)%s\n",
           $ir->{fix}, $ir->{mod}, ($ir->{mod} / $ir->{fix} - 1) * 100,
           $lua ? sprintf(", lua %.0f (%+.1f%%)", $ir->{lua},
                          ($ir->{lua} / $ir->{fix} - 1) * 100) : '';
    printf "  the module's own functions: %.0f instructions per request\n",
           $ir->{own};
}

# --- 2. storm ----------------------------------------------------------------

STORM:
goto SCALING if $only && $only ne 'storm';

my $burst = $ENV{BENCH_BURST} // 1000;
my $provider_ms = 100;

say "== storm: $burst concurrent requests, $rounds rounds, provider "
    . "$provider_ms ms";

mock('reset', { delay_ms => 0 });

# the provider's own latency, as a client sees it
my @plat;
for (1 .. 10) {
    mock('config', { delay_ms => $provider_ms });
    my $t0 = time;
    $http->request('POST', "http://127.0.0.1:$port{idp}/token",
                   { content => 'grant_type=client_credentials&client_id=x' });
    push @plat, (time - $t0) * 1000;
}
my $provider = median(@plat);

my (@valid, @revoked, @calls, @ok, @wake);

sub burst {
    my ($cred) = @_;
    my @res = storm(port => $port{front}, timeout => 60,
                    requests => [ map { { method => 'GET',
                                          uri => "/storm/$_?c=$cred" } }
                                  1 .. $burst ]);
    my @lat = map { $_->{elapsed} * 1000 } @res;
    my $ok = grep { $_->{status} == 200 } @res;
    return { ok => $ok, p50 => pct(50, @lat), p99 => pct(99, @lat),
             max => pct(100, @lat) };
}

for my $round (1 .. $rounds) {
    my $cred = "storm$round";

    mock('config', { delay_ms => 0 });
    get("/storm/first?c=$cred");                   # logs in
    my $v = burst($cred);                          # a valid token
    mock('revoke', { cred => $cred });
    mock('config', { delay_ms => $provider_ms });
    my $before = calls();
    my $r = burst($cred);                          # a revoked token
    my $after = calls();

    my ($b) = $before =~ /refresh_token=(\d+)/;
    my ($a) = $after =~ /refresh_token=(\d+)/;
    my ($bc) = $before =~ /calls=(\d+)/;
    my ($ac) = $after =~ /calls=(\d+)/;
    push @calls, $ac - $bc;
    push @ok, $r->{ok};
    push @valid, $v;
    push @revoked, $r;

    printf "  round %d: valid p99 %.0f ms; revoked: %d token calls, %d/%d "
           . "ok, p50 %.0f p99 %.0f max %.0f ms\n", $round, $v->{p99},
           $ac - $bc, $r->{ok}, $burst, $r->{p50}, $r->{p99}, $r->{max};
}

# how soon a waiting request in another worker resumes once the token is
# stored: the request that fetched it resumes at once in its own worker
say "== wake-up latency in the other worker: $rounds rounds";

for my $round (1 .. $rounds) {
    my $cred = "wake$round";
    my $log = "$out/front/logs/wake.log";
    truncate $log, 0 if -f $log;
    mock('config', { delay_ms => $provider_ms });
    my @res = storm(port => $port{front}, timeout => 60,
                    requests => [ map { { method => 'GET',
                                          uri => "/storm/w$_?c=$cred" } }
                                  1 .. 200 ]);
    my @lines;
    my $t0 = time;
    while (time - $t0 < 10) {
        open my $fh, '<', $log or next;
        @lines = <$fh>;
        close $fh;
        last if @lines >= 200;
        sleep 0.01;
    }
    my ($leader_pid, $leader_resume);
    my @rows;
    for (@lines) {
        my ($pid, $msec, $rt, $wait, $outcome) = split;
        my $resume = $msec - $rt + $wait;
        push @rows, [ $pid, $resume, $outcome ];
        ($leader_pid, $leader_resume) = ($pid, $resume)
            if $outcome eq 'refreshed';
    }
    next unless defined $leader_pid;
    for (@rows) {
        next if $_->[0] eq $leader_pid || $_->[2] ne 'waited';
        push @wake, ($_->[1] - $leader_resume) * 1000;
    }
}

my @vp99 = map { $_->{p99} } @valid;
my @vmax = map { $_->{max} } @valid;
my @rp99 = map { $_->{p99} } @revoked;
my $bound = median(@vp99) + $provider + median(@vmax);

$result{storm} = {
    burst => $burst, provider_ms => $provider,
    token_calls => \@calls, ok => \@ok,
    valid => { p50 => median(map { $_->{p50} } @valid),
               p99 => median(@vp99), max => median(@vmax) },
    revoked => { p50 => median(map { $_->{p50} } @revoked),
                 p99 => median(@rp99),
                 max => median(map { $_->{max} } @revoked) },
    p99_bound => $bound,
    wake_ms => { n => scalar @wake, p50 => pct(50, @wake),
                 p99 => pct(99, @wake), max => pct(100, @wake) },
};

printf "  token-endpoint calls per storm: %s; successes: %s\n",
       join(' ', @calls), join(' ', @ok);
printf "  p99: revoked %.0f ms, valid %.0f ms; bound: valid p99 + provider "
       . "%.0f ms + one more burst (valid max %.0f ms) = %.0f ms\n",
       median(@rp99), median(@vp99), $provider, median(@vmax), $bound;
printf "  resumed in the other worker after the token was stored: %d "
       . "requests, p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
       scalar @wake, pct(50, @wake) // -1, pct(99, @wake) // -1,
       pct(100, @wake) // -1;

# --- 3. scaling --------------------------------------------------------------

SCALING:
goto SESSIONS if $only && $only ne 'scaling';

say "== scaling: credentials and token sizes, $rounds rounds";

mock('config', { delay_ms => 0 });

sub login_many {
    my ($prefix, $n) = @_;
    for (my $i = 1; $i <= $n; $i += 500) {
        my $last = $i + 499 > $n ? $n : $i + 499;
        my @res = storm(port => $port{front}, timeout => 60,
                        requests => [ map { { method => 'GET',
                                              uri => "/many/x?c=$prefix$_" } }
                                      $i .. $last ]);
        my $bad = grep { $_->{status} != 200 } @res;
        die "login_many: $bad failures" if $bad;
    }
}

sub zone_used {
    my $s = decode_json(get('/status')->{content});
    return $s->{zones}{tokens}{used};
}

my $used0 = zone_used();
my %scale;

# the token cases use 100 credentials: the zone's memory grows by slab
# pages, too coarse to see one credential
for my $case ([ 'creds-1', 'c', 1, 0 ], [ 'creds-100', 'h', 100, 0 ],
              [ 'creds-10000', 't', 10000, 0 ], [ 'token-1k', 'k', 100, 1000 ],
              [ 'token-8k', 'e', 100, 8000 ])
{
    my ($name, $prefix, $n, $pad) = @$case;
    mock('config', { token_pad => $pad });
    my $u0 = zone_used();
    login_many($prefix, $n);
    my $per = (zone_used() - $u0) / $n;
    mock('config', { token_pad => 0 });

    my $script = "$out/$name.lua";
    write_file($script, <<"EOF");
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/many/x?c=$prefix" .. math.random($n))
end
EOF

    # the baseline: a fixed header of the same size
    my $fix = { 0 => '/fix0/', 1000 => '/fixk/', 8000 => '/fixe/' }->{$pad};
    my $base = "$out/$name-base.lua";
    write_file($base, <<"EOF");
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "${fix}x?c=$prefix" .. math.random($n))
end
EOF

    my (@r, @m, @b);
    for my $round (1 .. $rounds) {
        my ($x, $y);
        if ($round % 2) {
            $x = wrk("http://127.0.0.1:$port{front}/", $script);
            $y = wrk("http://127.0.0.1:$port{front}/", $base);
        } else {
            $y = wrk("http://127.0.0.1:$port{front}/", $base);
            $x = wrk("http://127.0.0.1:$port{front}/", $script);
        }
        push @m, $x->{rps};
        push @b, $y->{rps};
        push @r, $x->{rps} / $y->{rps};
    }
    $scale{$name} = { credentials => $n, token_bytes => 30 + $pad,
                      rps => median(@m), baseline_rps => median(@b),
                      ratio => median(@r), min => (sort @r)[0],
                      max => (sort @r)[-1], bytes_per_credential => $per };
    printf "  %-12s module %.0f rps, baseline %.0f rps, ratio %.3f "
           . "(%.3f .. %.3f), %.0f bytes per credential\n", $name,
           median(@m), median(@b), median(@r), (sort @r)[0], (sort @r)[-1],
           $per;
}

$result{scaling} = \%scale;

# --- 4. users' sessions ------------------------------------------------------
#
# A request that carries a session's handle, among $sessions live sessions
# (a lookup in a tree of that many, by the SHA-256 of the handle), against
# a request that attaches the token of one named credential: the same
# request bytes (both carry a handle, picked at random), the same proxy,
# the same upstream.

SESSIONS:
goto DONE if $only && $only ne 'sessions';

say "== sessions: $sessions live sessions, $session_rounds rounds";

mock('config', { delay_ms => 0, token_pad => 0 });

# $n logins through the nginx on $port, by wrk: the handles, one a line,
# in $file.  wrk is stopped once it has them all; the logins in flight
# then make a few sessions more.
sub login_sessions {
    my ($port, $n, $file, $prefix) = @_;
    my $lua = "$file.lua";
    write_file($lua, <<'EOF');
local out, i, prefix
init = function(args)
    out = io.open(args[1], "w")
    out:setvbuf("line")
    prefix = args[2]
end
request = function()
    i = (i or 0) + 1
    local email = prefix .. i .. "@example.com"
    return wrk.format("POST", "/login",
                      { ["Content-Type"] = "application/json" },
                      '{"email":"' .. email .. '","password":"secret-'
                      .. email .. '"}')
end
response = function(status, headers, body)
    local h = body:match('"session":"([%w_-]+)"')
    if status == 201 and h then
        out:write(h, "\n")
    else
        out:write("! ", status, " ", body:sub(1, 200), "\n")
    end
end
EOF
    unlink $file;
    my $t0 = time;
    my $pid = fork // die "fork";
    if ($pid == 0) {
        open STDOUT, '>', "$file.wrk";
        exec 'wrk', '-t1', '-c32', '-d600s', '--timeout', '10s', '-s', $lua,
             "http://127.0.0.1:$port/login", '--', $file, $prefix;
    }
    # a line is 44 bytes
    until ((-s $file // 0) >= $n * 44) {
        die "login_sessions: wrk ended early: " . `cat $file.wrk`
            if waitpid($pid, POSIX::WNOHANG()) == $pid;
        die "login_sessions: too slow" if time - $t0 > 600;
        sleep 0.2;
    }
    kill 'INT', $pid;
    waitpid $pid, 0;
    open my $fh, '<', $file or die "$file: $!";
    my @h = <$fh>;
    close $fh;
    my @bad = grep { /^!/ } @h;
    die "login_sessions: " . scalar(@bad) . " failed logins: $bad[0]" if @bad;
    my %seen;
    my $dup = grep { $seen{$_}++ } @h;
    die "login_sessions: $dup handles twice" if $dup;
    return { handles => scalar @h, seconds => time - $t0 };
}

# Sessions whose handles' digests share the 32 bits of the tree key: each
# is asked for once.  One that does not answer 200 is reported and left
# out of the requests (so far: a session inserted into the tree before it
# is marked as one, ngx_http_tokenrefresh_create(), can land on the wrong
# side of an equal key, where the lookup never finds it).
sub check_collisions {
    my ($port, $file) = @_;
    open my $fh, '<', $file or die "$file: $!";
    chomp(my @h = <$fh>);
    close $fh;
    my %by;
    push @{ $by{ substr(Digest::SHA::sha256($_), 0, 4) } }, $_ for @h;
    my @coll = map { @$_ } grep { @$_ > 1 } values %by;
    my %bad;
    for my $h (@coll) {
        my $r = $http->get("http://127.0.0.1:$port/ses/probe",
                           { headers => { 'X-Session' => $h } });
        $bad{$h} = $r->{status} if $r->{status} != 200;
    }
    if (%bad) {
        write_file($file, join '', map { "$_\n" } grep { !$bad{$_} } @h);
        printf "  NOT FOUND: %d of the %d sessions whose handles share a "
               . "tree key answer %s; left out of the requests\n",
               scalar keys %bad, scalar @coll, join(' ', sort values %bad);
    }
    return { colliding => scalar @coll, unreachable => scalar keys %bad };
}

sub zone_status {
    my ($port, $zone) = @_;
    my $r = $http->get("http://127.0.0.1:$port/status");
    die "status: $r->{status}" unless $r->{success};
    return decode_json($r->{content})->{zones}{$zone};
}

# the same requests for both: a random handle of $handles in X-Session, so
# that the lookup goes down the tree, not to one hot node
# ses1: the session, one handle for all the requests of a connection (an
# app's connection: the handle is hashed once per connection); mod and ses:
# a handle picked at random for each request (a gateway multiplexing many
# users' requests on its connections: hashed on every request)
sub session_scripts {
    my ($handles) = @_;
    my %script;
    for my $v ('mod', 'ses', 'ses1') {
        my $path = $v eq 'ses1' ? 'ses' : $v;
        my $pick = $v eq 'ses1' ? 'one' : 'reqs[math.random(n)]';
        $script{$v} = "$handles-$v.lua";
        write_file($script{$v}, <<"EOF");
local reqs, n, one = {}, 0, nil
init = function(args)
    for h in io.lines("$handles") do
        n = n + 1
        reqs[n] = wrk.format("GET", "/$path/x", { ["X-Session"] = h })
    end
    math.randomseed(os.time() + n)
    one = reqs[math.random(n)]
end
request = function()
    return $pick
end
EOF
    }
    return \%script;
}

get('/mod/warm');                     # the named credential's login

my $handles = "$out/handles";
my $u0 = zone_status($port{front}, 'users')->{used};
my $login = login_sessions($port{front}, $sessions, $handles, 'u');
my $zs = zone_status($port{front}, 'users');
die "sessions: $zs->{sessions}{evicted} evicted, the zone is too small"
    if $zs->{sessions}{evicted};
my $per = ($zs->{used} - $u0) / $zs->{sessions}{live};
printf "  %d logins in %.0f s; %d live sessions, zone %d MB, %.0f%% used, "
       . "%.0f bytes per session\n", $login->{handles}, $login->{seconds},
       $zs->{sessions}{live}, $users_mb, $zs->{used} / $zs->{size} * 100,
       $per;
my $coll = check_collisions($port{front}, $handles);

my $sscript = session_scripts($handles);
for my $v ('mod', 'ses', 'ses1') {
    wrk("http://127.0.0.1:$port{front}/", $sscript->{$v}, 1);
}

my (@sr, @sr1, %srps, %sp99);
for my $round (1 .. $session_rounds) {
    my %r;
    my @order = ('mod', 'ses', 'ses1');
    push @order, shift @order for 1 .. $round % 3;
    for my $v (@order) {
        $r{$v} = wrk("http://127.0.0.1:$port{front}/", $sscript->{$v});
        push @{ $srps{$v} }, $r{$v}{rps};
        push @{ $sp99{$v} }, $r{$v}{p99};
    }
    push @sr, $r{ses}{rps} / $r{mod}{rps};
    push @sr1, $r{ses1}{rps} / $r{mod}{rps};
    printf "  round %d: named credential %.0f rps, session %.0f rps (%.3f), "
           . "one handle per connection %.0f rps (%.3f)\n",
           $round, $r{mod}{rps}, $r{ses}{rps}, $sr[-1], $r{ses1}{rps},
           $sr1[-1];
}
my $zs2 = zone_status($port{front}, 'users');
die "sessions: $zs2->{sessions}{live} live sessions after the rounds, "
    . "$zs->{sessions}{live} before"
    if $zs2->{sessions}{live} != $zs->{sessions}{live};

my %sres = (
    sessions => $zs->{sessions}{live}, zone_mb => $users_mb,
    zone_used => $zs->{used}, bytes_per_session => $per,
    login_seconds => $login->{seconds},
    colliding => $coll->{colliding}, unreachable => $coll->{unreachable},
    rps => { map { $_ => median(@{ $srps{$_} }) } qw(mod ses ses1) },
    p99 => { map { $_ => median(@{ $sp99{$_} }) } qw(mod ses ses1) },
    ratio => { median => median(@sr), min => min(@sr), max => max(@sr),
               all => \@sr },
    ratio1 => { median => median(@sr1), min => min(@sr1), max => max(@sr1),
                all => \@sr1 },
);
printf "  session / named credential, requests/s: median %.3f (%.3f .. %.3f); "
       . "one handle per connection %.3f (%.3f .. %.3f)\n",
       median(@sr), min(@sr), max(@sr), median(@sr1), min(@sr1), max(@sr1);

# the same under callgrind: the zone is filled in that process, by logins
# through it before counting starts
if (system('which valgrind > /dev/null 2>&1') == 0) {
    my $cg_handles = "$out/cg-handles";
    my ($live, $cg_coll);
    my $ir = instructions(
        dir => 'cg-sessions', variants => [ 'mod', 'ses', 'ses1' ],
        own => 'ses',
        script => session_scripts($cg_handles),
        fill => sub {
            my ($port) = @_;
            my $l = login_sessions($port, $sessions, $cg_handles, 'c');
            $live = zone_status($port, 'users')->{sessions}{live};
            printf "  under callgrind: %d logins in %.0f s, %d live sessions\n",
                   $l->{handles}, $l->{seconds}, $live;
            $cg_coll = check_collisions($port, $cg_handles);
            $http->get("http://127.0.0.1:$port/mod/warm")->{status} == 200
                or die "sessions: /mod/ under callgrind";
        },
        after => sub {
            my ($port) = @_;
            my $z = zone_status($port, 'users');
            die "sessions under callgrind: $z->{sessions}{live} live, "
                . "$live before" if $z->{sessions}{live} != $live;
        });
    $sres{instructions} = {
        mod => $ir->{mod}, ses => $ir->{ses}, ses1 => $ir->{ses1},
        ratio => $ir->{ses} / $ir->{mod},
        difference => $ir->{ses} - $ir->{mod},
        ratio1 => $ir->{ses1} / $ir->{mod},
        difference1 => $ir->{ses1} - $ir->{mod},
        own => $ir->{own_of}, sessions => $live,
        colliding => $cg_coll->{colliding},
        unreachable => $cg_coll->{unreachable},
    };
    printf "  instructions per request: named credential %.0f, session %.0f "
           . "(%+.1f%%, %+.0f), one handle per connection %.0f (%+.1f%%, "
           . "%+.0f); the module's own functions %.0f, %.0f and %.0f\n",
           $ir->{mod}, $ir->{ses}, ($ir->{ses} / $ir->{mod} - 1) * 100,
           $ir->{ses} - $ir->{mod}, $ir->{ses1},
           ($ir->{ses1} / $ir->{mod} - 1) * 100, $ir->{ses1} - $ir->{mod},
           $ir->{own_of}{mod}, $ir->{own_of}{ses}, $ir->{own_of}{ses1};
}

$result{sessions} = \%sres;

DONE:
write_file("$out/results.json", $json->encode(\%result));

# a chart: every ratio with its spread over the rounds, and the storm's
# latencies with and without a refresh
my @ratios;
if (my $st = $result{steady}) {
    push @ratios, [ 'steady', @{ $st->{ratio} }{qw(median min max)} ];
    push @ratios, [ 'steady-lua', @{ $st->{ratio_lua} }{qw(median min max)} ]
        if $st->{ratio_lua};
}
for my $name (qw(creds-1 creds-100 creds-10000 token-1k token-8k)) {
    my $c = $scale{$name} or next;
    push @ratios, [ $name, @{$c}{qw(ratio min max)} ];
}
write_file("$out/ratios.dat",
           join '', map { sprintf "%s %.3f %.3f %.3f\n", @$_ } @ratios);

my $storm = $result{storm};
write_file("$out/storm.dat", $storm ? join '', map {
    sprintf "%s %.0f %.0f\n", $_, $storm->{valid}{$_}, $storm->{revoked}{$_}
} qw(p50 p99 max) : '');

write_file("$out/chart.gp", <<"EOF");
set terminal pngcairo size 1000,440 font ",10" noenhanced
set output "$out/benchmarks.png"
set multiplot layout 1,2 title "ngx_http_tokenrefresh_module, $result{date}"
set style fill solid 0.5
set boxwidth 0.6
set xtics rotate by -30
set yrange [0.5:1.5]
set title "module / hard-coded header: median, min .. max of the rounds"
plot "$out/ratios.dat" using 0:2:xtic(1) with boxes notitle, \\
     "" using 0:2:3:4 with yerrorbars pt -1 lc black notitle, \\
     1 notitle lc black, 0.98 title "target 0.98" dt 2
set yrange [0:*]
set style data histograms
set style histogram clustered gap 1
set xtics norotate
set key below
set title "1000 requests at once: latency (ms)"
plot "$out/storm.dat" using 2:xtic(1) title "valid token", \\
     "" using 3 title "revoked: one refresh, then replay"
unset multiplot
EOF
system("gnuplot $out/chart.gp") == 0 or warn "gnuplot failed\n";

say "== results in $out/results.json, chart in $out/benchmarks.png";
