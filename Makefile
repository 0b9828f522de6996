# ngx_http_tokenrefresh_module
#
#   make              build the dynamic module against Debian's nginx-dev
#   make test         run the Test::Nginx suite
#   make demo         start nginx, a mock identity provider and API, and
#                     walk through a short scenario
#   make test-asan    the suite against an AddressSanitizer nginx built from
#                     Debian's nginx source, with the module compiled in
#   make test-valgrind  the suite under valgrind (slow; not in CI)
#   make fuzz         run the libFuzzer target for FUZZ_SECONDS (600)
#   make bench        the benchmarks of docs/benchmarks.md (about 20 minutes)
#   make install      install the module where Debian's nginx looks for it
#   make deb          the Debian package libnginx-mod-http-tokenrefresh
#   make test-interop the interop suite against a real OpenID provider
#   make test-matrix  the suite against nginx 1.22 (Debian 12) and 1.26
#                     (Debian 13, in a chroot)
#   make clean
#
# Every target installs what is missing first (scripts/setup.sh: Debian 12
# packages, and Test::Nginx from Debian unstable pinned to that package).
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

BUILD     ?= build
SO         = $(BUILD)/ngx_http_tokenrefresh_module.so
SOURCES    = config scripts/build.sh $(wildcard ngx_http_tokenrefresh_module/*.[ch])

MODULES_DIR   ?= /usr/lib/nginx/modules
MODULES_CONF  ?= /usr/share/nginx/modules-available
MODULES_ON    ?= /etc/nginx/modules-enabled
CONF_NAME      = mod-http-tokenrefresh.conf

FUZZ_SECONDS ?= 600

.PHONY: all setup test test-asan test-valgrind fuzz bench demo install \
        uninstall deb test-interop test-matrix clean

all: $(SO)

setup:
	@scripts/setup.sh --check || scripts/setup.sh

$(SO): $(SOURCES) | setup
	scripts/build.sh $(BUILD)

test: $(SO)
	scripts/test.sh $(T)

test-asan: setup
	scripts/asan.sh $(T)

test-valgrind: $(SO)
	@scripts/setup.sh --check valgrind || scripts/setup.sh valgrind
	scripts/valgrind.sh $(T)

fuzz: setup
	@scripts/setup.sh --check fuzz || scripts/setup.sh fuzz
	scripts/fuzz.sh $(FUZZ_SECONDS)

test-interop:
	scripts/interop.sh $(T)

test-matrix:
	scripts/matrix.sh $(T)

bench: $(SO)
	@scripts/setup.sh --check bench || scripts/setup.sh bench
	ulimit -n "$$(ulimit -Hn)"; perl bench/bench.pl
	ulimit -n "$$(ulimit -Hn)"; perl bench/persist.pl
	ulimit -n "$$(ulimit -Hn)"; perl bench/fleet.pl

demo: $(SO)
	scripts/demo.sh

# "make install" and the package (make deb) install the same files: each
# refuses to overwrite the other's
install: $(SO)
	@for f in $(MODULES_DIR)/ngx_http_tokenrefresh_module.so \
	          $(MODULES_CONF)/$(CONF_NAME); do \
	    if [ -z "$(DESTDIR)" ] && dpkg-query -S "$$f" >/dev/null 2>&1; then \
	        echo "install: $$f belongs to the package" \
	             "$$(dpkg-query -S "$$f" | cut -d: -f1); remove it" \
	             "(apt-get remove) or upgrade it instead" >&2; \
	        exit 1; \
	    fi; \
	done
	install -d $(DESTDIR)$(MODULES_DIR) $(DESTDIR)$(MODULES_CONF) \
	           $(DESTDIR)$(MODULES_ON)
	install -m 0644 $(SO) $(DESTDIR)$(MODULES_DIR)/
	echo "load_module modules/ngx_http_tokenrefresh_module.so;" \
	    > $(DESTDIR)$(MODULES_CONF)/$(CONF_NAME)
	ln -sf $(MODULES_CONF)/$(CONF_NAME) \
	    $(DESTDIR)$(MODULES_ON)/50-$(CONF_NAME)

uninstall:
	@if [ -z "$(DESTDIR)" ] \
	    && dpkg-query -S $(MODULES_DIR)/ngx_http_tokenrefresh_module.so \
	       >/dev/null 2>&1; then \
	    echo "uninstall: the module belongs to a package; remove it with" \
	         "apt-get remove libnginx-mod-http-tokenrefresh" >&2; \
	    exit 1; \
	fi
	rm -f $(DESTDIR)$(MODULES_DIR)/ngx_http_tokenrefresh_module.so \
	      $(DESTDIR)$(MODULES_CONF)/$(CONF_NAME) \
	      $(DESTDIR)$(MODULES_ON)/50-$(CONF_NAME)

# the Debian package, built as Debian builds its nginx modules
deb: setup
	@scripts/setup.sh --check deb || scripts/setup.sh deb
	scripts/deb.sh

clean:
	rm -rf $(BUILD) t/servroot
