# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

package t::TokenRefresh;

# Test::Nginx glue for ngx_http_tokenrefresh_module.
#
# Loading this module
#   - starts the mock identity provider and API (t/lib/mock_server.pl) as
#     a process of its own, and stops it when the test file ends;
#   - exports to the test file (and to "--- init" code): mock(), calls(),
#     stats(), storm(), error_log_since(), pids_in(), wait_until(), and
#     start_nginx(), stop_nginx(), restart_nginx(), reload_nginx();
#   - prepends to every block's http_config the shared zone and the two
#     upstreams, and resets the mock before every block:
#
#       tokenrefresh_zone tokens:1m;
#       upstream idp { server 127.0.0.1:$TEST_NGINX_IDP_PORT; }
#       upstream api { server 127.0.0.1:$TEST_NGINX_API_PORT; keepalive 16; }
#
#   - appends to every block's server config a location that shows the
#     provider's call counts, one line, e.g. "calls=1 client_credentials=1":
#
#       location = /calls { tokenrefresh off; proxy_pass http://<idp>/_mock/calls; }

use Test::Nginx::Socket;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . '/lib';
use TokenRefresh::Client ();

use HTTP::Tiny;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP);
use Errno qw(EINPROGRESS EAGAIN EWOULDBLOCK EINTR);
use Socket qw(inet_aton pack_sockaddr_in);
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);
use POSIX ();

my $base = $ENV{TEST_NGINX_MOCK_PORT} // 19850;

$ENV{TEST_NGINX_IDP_PORT} //= $base;
$ENV{TEST_NGINX_API_PORT} //= $base + 10;
$ENV{TEST_NGINX_H2_PORT} //= $base + 20;    # for an h2c listener
$ENV{TEST_NGINX_DOC_PORT} //= $base + 30;   # for the servers of the docs

my $idp_port = $ENV{TEST_NGINX_IDP_PORT};
my $api_port = $ENV{TEST_NGINX_API_PORT};
my $dir = dirname(abs_path(__FILE__));
my $json = JSON::PP->new->canonical;
my $http = HTTP::Tiny->new(timeout => 10 * ($ENV{TEST_TIME_SCALE} || 1),
                           keep_alive => 0);

my $mock_pid;

sub start_mock {
    # the mock says "ready" on a pipe once it listens: a mock that cannot
    # (another one has the ports) must fail the test file, not let it talk
    # to the other one
    pipe(my $ready, my $w) or die "pipe: $!";

    $mock_pid = fork;
    die "fork: $!" unless defined $mock_pid;

    if ($mock_pid == 0) {
        close $ready;
        open STDOUT, '>&', $w or die "stdout: $!";
        exec $^X, "$dir/lib/mock_server.pl", '--idp-port', $idp_port,
             '--api-port', $api_port, '--corpus', "$dir/../fuzz/corpus";
        die "exec: $!";
    }

    close $w;

    my $line = '';
    if (IO::Select->new($ready)->can_read(scaled(10))) {
        $line = <$ready> // '';
    }
    close $ready;

    $line eq "ready\n"
        or die "mock server did not start on ports $idp_port/$api_port\n";
}


sub stop_mock {
    return unless $mock_pid;
    kill 'TERM', $mock_pid;
    waitpid $mock_pid, 0;
    undef $mock_pid;
}

sub scale_durations {
    my ($directive) = @_;
    $directive =~ s{(\s)(\d+)(ms|s|m|h)?}{
        my $ms = $2 * { ms => 1, s => 1000, m => 60000, h => 3600000 }->{$3 // 's'};
        $1 . int(scaled($ms)) . 'ms'
    }ge;
    return $directive;
}

# A time bound in a test, stretched under valgrind (TEST_TIME_SCALE).
sub scaled {
    my ($seconds) = @_;
    return $seconds * ($ENV{TEST_TIME_SCALE} || 1);
}

# Polls a condition every few milliseconds; returns its value, or false
# after the timeout.  For conditions that take real time to come true
# (a token expiring, a process exiting), never as a replacement for one.
sub wait_until {
    my ($cond, $timeout) = @_;
    my $deadline = time + scaled($timeout // 10);
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return 0 if time > $deadline;
        sleep 0.005;
    }
}

sub control {
    my ($path, $data) = @_;
    my $res = $http->request('POST', "http://127.0.0.1:$idp_port/_mock/$path",
                             { content => $json->encode($data // {}) });
    die "mock $path: $res->{status} $res->{content}" unless $res->{success};
    return $json->decode($res->{content});
}

# mock(delay_ms => 300, lifetime => 2, ...): change the mock's behaviour;
# times scale with TEST_TIME_SCALE, as the tests' own waits do
sub mock {
    my (%cfg) = @_;
    for my $k (qw(lifetime delay_ms api_delay_ms retry_after)) {
        $cfg{$k} = scaled($cfg{$k}) if defined $cfg{$k} && length $cfg{$k};
    }
    return control('config', \%cfg);
}

# revoke(cred => 'x'): the API rejects the tokens issued so far
sub revoke { return control('revoke', { @_ }); }

sub stats {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/stats");
    return $json->decode($res->{content});
}

sub requests {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/requests");
    return $json->decode($res->{content});
}

sub receiving {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/receiving");
    return split /\n/, $res->{content};
}

sub calls {
    my $res = $http->get("http://127.0.0.1:$idp_port/_mock/calls");
    chomp(my $line = $res->{content});
    return $line;
}

# hit(GET => "/api/a"): a request to the nginx under test; returns
# { status, content, headers, elapsed }
sub hit {
    my ($method, $uri, %o) = @_;
    my $port = $o{port} // $Test::Nginx::Util::ServerPortForClient;
    my $t0 = time;
    my $res = $http->request($method, "http://127.0.0.1:$port$uri",
                             { headers => $o{headers} // {},
                               defined $o{body} ? (content => $o{body}) : () });
    $res->{elapsed} = time - $t0;
    return $res;
}

sub error_log_since {
    my ($offset) = @_;
    my $file = $Test::Nginx::Util::ErrLogFile;
    open my $fh, '<', $file or return ();
    seek $fh, $offset // 0, 0;
    my @lines = <$fh>;
    close $fh;
    return @lines;
}

sub error_log_size {
    return -s $Test::Nginx::Util::ErrLogFile // 0;
}

# the distinct worker pids among error log lines that match a pattern
sub pids_in {
    my ($re, @lines) = @_;
    my %pids;
    for (@lines) {
        $pids{$1} = 1 if /\[\w+\] (\d+)#\d+: .*$re/;
    }
    return sort keys %pids;
}

sub master_pid {
    my $file = $Test::Nginx::Util::PidFile;
    open my $fh, '<', $file or return undef;
    my $pid = <$fh>;
    close $fh;
    chomp $pid if defined $pid;
    return $pid;
}

# kill 0 also succeeds on a zombie: look at the process state instead
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

# start_nginx(): starts nginx again with the block's configuration after a
# test stopped it, as Test::Nginx starts it: a daemon, or (under valgrind,
# where daemon is off) a child process under valgrind.  Returns when the
# new master and its workers run.
sub start_nginx {
    my $old = master_pid();
    my $cmd = "$Test::Nginx::Util::NginxBinary "
            . "-p $Test::Nginx::Util::ServRoot/ "
            . "-c $Test::Nginx::Util::ConfFile";

    if ($ENV{TEST_NGINX_USE_VALGRIND}) {
        $cmd = Test::Nginx::Util::_build_valgrind_command($cmd);
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            exec $cmd;
            die "exec: $!";
        }
    } else {
        system($cmd) == 0 or die "nginx did not start: $cmd";
    }

    wait_until(sub {
        my $m = master_pid();
        my @w = worker_pids();
        return $m && (!$old || $m != $old || !alive($old)) && alive($m)
               && @w >= worker_count();
    }, 20) or die "nginx did not start";
}

# how many worker processes the block runs (none without a master)
sub worker_count {
    return ($Test::Nginx::Util::MasterProcessEnabled // 'on') eq 'on'
           ? $Test::Nginx::Util::Workers // 1 : 0;
}

# stop_nginx('QUIT' | 'KILL'): a graceful stop, or the master and its
# workers killed at once; returns when they are gone
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

# reload_nginx(): "nginx -s reload", done when the old workers are gone
sub reload_nginx {
    my %old = map { $_ => 1 } worker_pids();
    kill 'HUP', master_pid();
    wait_until(sub {
        my @now = worker_pids();
        return @now >= worker_count() && !grep { $old{$_} } @now;
    }, 20) or die "the reload did not finish";
}

# fire(POST => '/api/a', body => '...'): sends a request and returns at
# once; collect($handle) reads the answer, drop($handle) hangs up.
# the fuzz corpus, for t/015-corpus.t
sub corpus_files {
    return sort map { (split m{/})[-1] } glob "$dir/../fuzz/corpus/*";
}

sub storm {
    my (%o) = @_;
    $o{port} //= $Test::Nginx::Util::ServerPortForClient;
    return TokenRefresh::Client::storm(%o);
}

sub parse_response { return TokenRefresh::Client::parse_response(@_); }

sub fire {
    my ($method, $uri, %o) = @_;
    my $port = $o{port} // $Test::Nginx::Util::ServerPortForClient;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 5)
        or die "fire: connect: $!";
    my $body = $o{body} // '';
    my $out = "$method $uri HTTP/1.1\r\nHost: localhost\r\n"
            . "Connection: close\r\n";
    $out .= "$_: $o{headers}{$_}\r\n" for keys %{ $o{headers} // {} };
    $out .= "Content-Length: " . length($body) . "\r\n"
        if (length $body || $method eq 'POST')
           && !grep { lc eq 'content-length' } keys %{ $o{headers} // {} };
    $out .= "\r\n$body";
    $s->autoflush(1);
    print $s $out;
    return { sock => $s, start => time };
}

sub collect {
    my ($h, $timeout) = @_;
    my $s = $h->{sock};
    my $in = '';
    my $deadline = time + scaled($timeout // 20);
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        next unless $sel->can_read(0.5);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $in .= $buf;
    }
    close $s;
    my $r = parse_response($in);
    $r->{elapsed} = time - $h->{start};
    return $r;
}

sub drop {
    my ($h) = @_;
    close $h->{sock};
}

# the requests the mock API got for a path (both attempts of a replay)
sub api_requests {
    my ($path) = @_;
    return grep { $_->{port} eq 'api' && $_->{path} eq $path }
           @{ requests() };
}

{
    # "--- ... eval" sections are evaluated in Test::Base::Filter
    no strict 'refs';
    *{"Test::Base::Filter::scaled"} = \&scaled;
}

for my $f (qw(scaled corpus_files fire collect drop api_requests receiving mock control revoke stats requests calls storm wait_until
              hit
              alive error_log_since error_log_size pids_in master_pid
              worker_pids start_nginx stop_nginx restart_nginx
              reload_nginx))
{
    no strict 'refs';
    *{"main::$f"} = \&$f;
    *{"Test::Nginx::Util::$f"} = \&$f;
}

# "--- init" code runs in Test::Nginx::Util: give it Test::More's checks
{
    no strict 'refs';

    # time() with sub-second resolution, as waits for expiry need
    *{"Test::Nginx::Util::time"} = \&Time::HiRes::time;
    *{"main::time"} = \&Time::HiRes::time;

    *{"Test::Nginx::Util::sha256_hex"} = \&Digest::SHA::sha256_hex;
    *{"main::sha256_hex"} = \&Digest::SHA::sha256_hex;
}

for my $f (qw(ok is isnt like unlike cmp_ok is_deeply diag note pass fail))
{
    no strict 'refs';
    no warnings 'redefine';
    *{"Test::Nginx::Util::$f"} = \&{"Test::More::$f"}
        unless defined &{"Test::Nginx::Util::$f"};
    *{"main::$f"} = \&{"Test::More::$f"} unless defined &{"main::$f"};
}

add_block_preprocessor(sub {
    my $block = shift;

    my $http = <<"_EOC_";
tokenrefresh_zone tokens:1m;
upstream idp { server 127.0.0.1:\$TEST_NGINX_IDP_PORT; }
upstream api { server 127.0.0.1:\$TEST_NGINX_API_PORT; keepalive 16; }
_EOC_

    $block->set_value('http_config', $http . ($block->http_config // ''))
        unless $block->no_default_http_config;

    $block->set_value('config', ($block->config // '') . <<'_EOC_');
location = /calls {
    tokenrefresh off;
    proxy_pass http://127.0.0.1:$TEST_NGINX_IDP_PORT/_mock/calls;
}
_EOC_

    $block->set_value('init', 'control("reset"); ' . ($block->init // ''));

    # valgrind keeps descriptors of its own below the hard limit, so
    # raising the limit fails there; its storms are small anyway
    if ($ENV{TEST_NGINX_USE_VALGRIND} && defined $block->main_config) {
        my $main = $block->main_config;
        $main =~ s/^\s*worker_rlimit_nofile\s+\d+;\n//mg;
        $block->set_value('main_config', $main);
    }

    # under valgrind (TEST_TIME_SCALE) the module's own times stretch too;
    # not in configurations that must fail, whose errors quote them
    if (($ENV{TEST_TIME_SCALE} || 1) != 1 && !defined $block->must_die) {
        for my $section (qw(config http_config)) {
            my $text = $block->$section // next;
            $text =~ s{(tokenrefresh_(?:refresh_timeout|wait_timeout|backoff|
                         min_token_age|default_lifetime|ahead)
                        (?:\s+\d+(?:ms|s|m|h)?)+)}
                      {scale_durations($1)}gex;
            $block->set_value($section, $text);
        }
    }
});

# error_log checks see the log of all the requests of a block
check_accum_error_log();

start_mock();

add_cleanup_handler(sub { stop_mock() });

END { stop_mock() }

1;
