#!/usr/bin/env bash
# images.sh builds, with no container registry, the kind node image that
# scripts/kind/up.sh creates clusters from, and caches every piece under
#
#   ${MESHFED_KIND_CACHE:-~/.cache/meshfed/kind}/<KEY>/
#
# where KEY names every version that goes in (see KEY below). Nothing is
# pulled from a registry: the node's root filesystem is a Debian debootstrap
# (Debian's mirror), Kubernetes, etcd, CoreDNS and crictl are built from
# source through the Go module proxy, and the control-plane images are made
# FROM scratch (`docker import`) and preloaded into the node's containerd.
#
#   rootfs     Debian bookworm (debootstrap --variant=minbase) with systemd,
#              containerd 1.6, runc, CNI plugins, iptables, conntrack, ...
#   bin/       kubelet kubeadm kubectl kube-proxy kube-apiserver
#              kube-controller-manager kube-scheduler etcd (one go build,
#              CGO_ENABLED=0, module scripts/kind/tools), coredns, crictl,
#              pause (kubernetes' build/pause/linux/pause.c, gcc -static)
#   images/    registry.k8s.io/<component>:<version> as docker archives, the
#              names and tags kubeadm of K8S_VERSION expects
#   node image meshfed/kind-node:<tag> in Docker: kind's base image files
#              (sigs.k8s.io/kind module: entrypoint, kubelet units, containerd
#              config), the binaries, scripts/kind/node/* (kind-cni: the pod
#              network; kind-volumes: writable host-path volumes), and the images
#              unpacked into /var/lib/containerd
#
# Each step is skipped when its output exists. Timings go to
# <KEY>/build-times.log. Run through `make kind-images`.
#
# Needs root (debootstrap, chroot), Docker running with the runtime
# meshfed-kind where --privileged fails (scripts/kind/dockerd.sh), debootstrap,
# gcc, jq, Go.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly here
readonly TOOLS="$here/tools"
readonly GO=${GO:-go}
export PATH="$here/bin:$PATH" # the docker shim (runtime meshfed-kind for --privileged)

log() { printf 'kind-images: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

modversion() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$TOOLS/go.mod"; }

K8S_VERSION=$(modversion k8s.io/kubernetes)
ETCD_VERSION=$(modversion go.etcd.io/etcd/server/v3)
[[ -n $K8S_VERSION && -n $ETCD_VERSION ]] || die "cannot read versions from $TOOLS/go.mod"
readonly K8S_VERSION ETCD_VERSION
# What kubeadm $K8S_VERSION expects (cmd/kubeadm/app/constants): a test of
# this script is the kubeadm check below, which fails when they differ.
readonly COREDNS_VERSION=v1.14.2
readonly PAUSE_VERSION=3.10.2
readonly CRICTL_VERSION=v1.34.0
readonly KIND_VERSION=v0.33.0
readonly SUITE=bookworm
# REV: bump when the node image's contents change for the same versions
# (the cache folder, keyed by versions, is kept: binaries are not rebuilt).
readonly REV=5
readonly KEY="k8s-$K8S_VERSION-etcd-$ETCD_VERSION-coredns-$COREDNS_VERSION-$SUITE"
readonly CACHE_ROOT=${MESHFED_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/kind}
readonly DEST="$CACHE_ROOT/$KEY"
# The component images change with the node image: a folder per REV.
readonly IMAGES="$DEST/images-r$REV"
readonly NODE_IMAGE="meshfed/kind-node:$K8S_VERSION-r$REV"
readonly TIMES="$DEST/build-times.log"

case ${1:-build} in
node-image)
	echo "$NODE_IMAGE"
	exit 0
	;;
cache-dir)
	echo "$DEST"
	exit 0
	;;
build) ;;
*) die "usage: $0 [build|node-image|cache-dir]" ;;
esac

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and chroot)"
for c in debootstrap gcc jq docker; do
	command -v "$c" >/dev/null || die "$c not found (apt-get install debootstrap gcc jq docker.io)"
done
docker info >/dev/null 2>&1 || die "Docker does not answer: start it (scripts/kind/dockerd.sh)"

mkdir -p "$DEST/bin" "$IMAGES"
exec 9>"$DEST/.lock"
flock 9

# timed NAME CMD... runs CMD and records its wall time in $TIMES.
timed() {
	local name=$1 start=$SECONDS
	shift
	log "$name ..."
	"$@"
	log "$name: $((SECONDS - start)) s"
	printf '%s %s %d s\n' "$(date -u +%FT%TZ)" "$name" $((SECONDS - start)) >>"$TIMES"
}

# --- binaries -------------------------------------------------------------
readonly K8S_BINS=(kubelet kubeadm kubectl kube-proxy kube-apiserver kube-controller-manager kube-scheduler)
build_k8s() {
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	local tmp pkgs=()
	tmp=$(mktemp -d "$DEST/.bin.XXXXXX")
	for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	(cd "$TOOLS" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags "$ld" -o "$tmp/" "${pkgs[@]}")
	(cd "$TOOLS" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
	mv -f "$tmp"/* "$DEST/bin/"
	rmdir "$tmp"
}
if [[ ! -x $DEST/bin/etcd || ! -x $DEST/bin/kubelet || ! -x $DEST/bin/kube-scheduler ]]; then
	timed "go build kubernetes $K8S_VERSION + etcd $ETCD_VERSION (CGO_ENABLED=0)" build_k8s
fi

# gobuild_tool OUT MODULE@VERSION PKG: builds PKG of MODULE in a scratch module.
gobuild_tool() {
	local out=$1 modver=$2 pkg=$3 dir
	dir=$(mktemp -d "$DEST/.src.XXXXXX")
	(
		cd "$dir"
		"$GO" mod init meshfed-kind-build >/dev/null 2>&1
		GOFLAGS=-mod=mod "$GO" get "$modver" >/dev/null
		CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags "-s -w" -o "$DEST/bin/$out" "$pkg"
	)
	rm -rf "$dir"
}
[[ -x $DEST/bin/coredns ]] || timed "go build coredns $COREDNS_VERSION" gobuild_tool coredns "github.com/coredns/coredns@$COREDNS_VERSION" github.com/coredns/coredns
[[ -x $DEST/bin/crictl ]] || timed "go build crictl $CRICTL_VERSION" gobuild_tool crictl "sigs.k8s.io/cri-tools@$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl

K8S_SRC=$(cd "$TOOLS" && GOFLAGS=-mod=mod "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)
KIND_SRC=$(cd "$TOOLS" && GOFLAGS=-mod=mod "$GO" mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)
readonly K8S_SRC KIND_SRC
[[ -d $K8S_SRC && -d $KIND_SRC/images/base/files ]] || die "sources not found: k8s.io/kubernetes ($K8S_SRC), sigs.k8s.io/kind ($KIND_SRC)"
build_pause() {
	gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-meshfed" -o "$DEST/bin/pause" "$K8S_SRC/build/pause/linux/pause.c"
	strip "$DEST/bin/pause"
}
[[ -x $DEST/bin/pause ]] || timed "gcc pause $PAUSE_VERSION" build_pause

# kubeadm must expect exactly the images built here.
want=$("$DEST/bin/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | sort)
have=$(printf '%s\n' \
	"registry.k8s.io/kube-apiserver:$K8S_VERSION" \
	"registry.k8s.io/kube-controller-manager:$K8S_VERSION" \
	"registry.k8s.io/kube-scheduler:$K8S_VERSION" \
	"registry.k8s.io/kube-proxy:$K8S_VERSION" \
	"registry.k8s.io/coredns/coredns:$COREDNS_VERSION" \
	"registry.k8s.io/pause:$PAUSE_VERSION" \
	"registry.k8s.io/etcd:${ETCD_VERSION#v}-0" | sort)
[[ $want == "$have" ]] || die "kubeadm $K8S_VERSION expects images that differ from those built here:
$(diff <(echo "$want") <(echo "$have"))"

# --- root filesystem --------------------------------------------------------
readonly PACKAGES=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,ebtables,conntrack,ethtool,socat,iproute2,util-linux,mount,kmod,procps,ca-certificates,libseccomp2,pigz,gzip,tar,bash,hostname,e2fsprogs,jq
debootstrap_rootfs() {
	local dir
	dir=$(mktemp -d "$DEST/.debootstrap.XXXXXX")
	debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$DEST/debootstrap.log" 2>&1 ||
		die "debootstrap failed: $(tail -5 "$DEST/debootstrap.log")"
	rm -rf "$dir/rootfs/var/cache/apt/archives/"*.deb "$dir/rootfs/var/lib/apt/lists/"*
	tar -C "$dir/rootfs" --numeric-owner --xattrs -cf "$ROOTFS" .
	rm -rf "$dir"
}
# the tarball's name changes with the package list
ROOTFS="$DEST/rootfs-$(echo "$PACKAGES" | sha256sum | cut -c1-12).tar"
readonly ROOTFS
[[ -s $ROOTFS ]] || timed "debootstrap $SUITE" debootstrap_rootfs

# --- component images -------------------------------------------------------
# image NAME TREE ENTRYPOINT_JSON: imports folder TREE as image NAME (one
# layer, FROM scratch) and saves it to images/.
image_from_tree() {
	local name=$1 tree=$2 entry=$3 file
	file="$IMAGES/$(echo "${name#registry.k8s.io/}" | tr '/:' '__').tar"
	[[ -s $file ]] && return 0
	tar -C "$tree" --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -cf "$tree.tar" .
	docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
		--change "ENTRYPOINT $entry" "$tree.tar" "$name" >/dev/null
	docker save -o "$file.tmp" "$name"
	mv -f "$file.tmp" "$file"
	rm -f "$tree.tar"
}
# copy_libs ROOT TREE FILE...: copies FILEs of ROOT and the shared libraries
# they need (ldd in a chroot of ROOT) into TREE.
copy_libs() {
	local root=$1 tree=$2 f
	shift 2
	for f in "$@"; do
		(cd "$root" && cp -a --parents ".$f" "$tree/")
		chroot "$root" ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r l; do
			(cd "$root" && cp -L --parents ".$l" "$tree/")
		done
	done
}
build_images() {
	local work
	work=$(mktemp -d "$DEST/.images.XXXXXX")
	local b
	for b in kube-apiserver kube-controller-manager kube-scheduler; do
		mkdir -p "$work/$b/usr/local/bin"
		cp "$DEST/bin/$b" "$work/$b/usr/local/bin/"
		image_from_tree "registry.k8s.io/$b:$K8S_VERSION" "$work/$b" "[\"/usr/local/bin/$b\"]"
	done
	mkdir -p "$work/etcd/usr/local/bin"
	cp "$DEST/bin/etcd" "$work/etcd/usr/local/bin/"
	image_from_tree "registry.k8s.io/etcd:${ETCD_VERSION#v}-0" "$work/etcd" '["/usr/local/bin/etcd"]'
	mkdir -p "$work/coredns"
	cp "$DEST/bin/coredns" "$work/coredns/coredns"
	image_from_tree "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$work/coredns" '["/coredns"]'
	mkdir -p "$work/pause"
	cp "$DEST/bin/pause" "$work/pause/pause"
	image_from_tree "registry.k8s.io/pause:$PAUSE_VERSION" "$work/pause" '["/pause"]'
	# kube-proxy runs iptables and conntrack: those of the node's Debian, with
	# their libraries, from the root filesystem.
	mkdir -p "$work/rootfs" "$work/kube-proxy/usr/local/bin"
	tar -C "$work/rootfs" -xf "$ROOTFS"
	cp "$DEST/bin/kube-proxy" "$work/kube-proxy/usr/local/bin/"
	local xt
	xt=$(cd "$work/rootfs" && ls usr/sbin/xtables-nft-multi usr/sbin/xtables-legacy-multi usr/sbin/conntrack)
	# The xtables extensions are loaded at run time, with their own
	# libraries (libxt_statistic.so, for Services with several endpoints,
	# needs libm): ldd them too.
	xt+=" "$(cd "$work/rootfs" && ls usr/lib/x86_64-linux-gnu/xtables/*.so)
	copy_libs "$work/rootfs" "$work/kube-proxy" $(printf '/%s ' $xt)
	(cd "$work/rootfs" && find ./usr/sbin -lname 'xtables-*-multi' -exec cp -a --parents {} "$work/kube-proxy/" \;)
	# /usr/sbin/iptables is an alternatives link in Debian: the nft variant here.
	for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -sf "xtables-nft-multi" "$work/kube-proxy/usr/sbin/$t"
	done
	mkdir -p "$work/kube-proxy/lib64" "$work/kube-proxy/run" "$work/kube-proxy/tmp"
	image_from_tree "registry.k8s.io/kube-proxy:$K8S_VERSION" "$work/kube-proxy" '["/usr/local/bin/kube-proxy"]'
	rm -rf "$work"
}
# seven images: kube-apiserver, -controller-manager, -scheduler, kube-proxy,
# etcd, coredns, pause
if (($(find "$IMAGES" -maxdepth 1 -name '*.tar' -size +0 | wc -l) < 7)); then
	timed "component images" build_images
fi

# --- node image ---------------------------------------------------------------
node_image() {
	local work root base
	work=$(mktemp -d "$DEST/.node.XXXXXX")
	root="$work/rootfs"
	base="$KIND_SRC/images/base/files"
	mkdir -p "$root"
	tar -C "$root" -xf "$ROOTFS"
	# kind's base image files (images/base/Dockerfile), with Debian's paths
	install -m 0755 "$base/usr/local/bin/entrypoint" "$root/usr/local/bin/entrypoint"
	mkdir -p "$root/kind/bin" "$root/kind/manifests" "$root/etc/kubernetes/manifests" "$root/opt/cni/bin"
	install -m 0755 "$base"/kind/bin/* "$root/kind/bin/"
	install -m 0644 "$base/etc/crictl.yaml" "$root/etc/crictl.yaml"
	# Kubernetes 1.35+ kubelets refuse cgroup v1 unless told otherwise
	# (failCgroupV1 defaults to true); these machines have cgroup v1 only.
	# The flag, rather than a kubeadm patch in every kind config, keeps
	# `kind create cluster --image` working with any config.
	printf '%s --fail-cgroupv1=false\n' "$(cat "$base/etc/default/kubelet")" >"$root/etc/default/kubelet"
	install -m 0644 "$base"/etc/sysctl.d/* "$root/etc/sysctl.d/"
	mkdir -p "$root/etc/systemd/system/kubelet.service.d" "$root/etc/containerd"
	for u in kubelet.service kubelet.slice undo-mount-hacks.service containerd.service; do
		install -m 0644 "$base/etc/systemd/system/$u" "$root/etc/systemd/system/$u"
	done
	sed -i 's#/usr/local/bin/containerd#/usr/bin/containerd#' "$root/etc/systemd/system/containerd.service"
	install -m 0644 "$base"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
	# containerd 1.6 reads kind's config (version 2); no fuse-overlayfs
	# (rootless only), and the pause image built here. restrict_oom_score_adj:
	# lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which the
	# node lacks where runc-nosysresource runs it; containerd then clamps the
	# score it asks runc for to its own, as rootless kind does (without it,
	# every pod sandbox fails: "runc create failed: ... can't get final
	# child's PID from pipe: EOF").
	sed -e '/^\[proxy_plugins\]/,/^  address/d' -e "s#registry.k8s.io/pause:[0-9.]*#registry.k8s.io/pause:$PAUSE_VERSION#" \
		-e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
		"$base/etc/containerd/config.toml" >"$root/etc/containerd/config.toml"
	chroot "$root" ctr oci spec |
		jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
		jq 'del(.process.rlimits)' >"$root/etc/containerd/cri-base.json"
	# the CNI plugins of Debian's containernetworking-plugins, where kubelet looks
	for p in host-local loopback ptp portmap bridge; do ln -sf "/usr/lib/cni/$p" "$root/opt/cni/bin/$p"; done
	for b in kubelet kubeadm kubectl crictl; do install -m 0755 "$DEST/bin/$b" "$root/usr/bin/$b"; done
	install -m 0755 "$here/node/kind-cni" "$root/usr/local/bin/kind-cni"
	install -m 0644 "$here/node/kind-cni.service" "$root/etc/systemd/system/kind-cni.service"
	install -m 0755 "$here/node/kind-volumes" "$root/usr/local/bin/kind-volumes"
	install -m 0644 "$here/node/kind-volumes.service" "$root/etc/systemd/system/kind-volumes.service"
	install -m 0644 "$here/node/default-cni.yaml" "$here/node/default-storage.yaml" "$root/kind/manifests/"
	echo "$K8S_VERSION" >"$root/kind/version"
	# systemd as kind's base image sets it up
	find "$root/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
	rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
		"$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
		"$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
	echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
	chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service kind-cni.service kind-volumes.service >/dev/null 2>&1
	chroot "$root" systemctl mask systemd-binfmt.service >/dev/null 2>&1
	# preload: the images unpacked by this containerd into a folder that
	# becomes the image's /var/lib/containerd
	local name="meshfed-kind-preload-$$"
	mkdir -p "$work/containerd"
	tar -C "$root" --numeric-owner --xattrs -cf "$work/stage.tar" .
	docker import "$work/stage.tar" "meshfed/kind-node-stage:$K8S_VERSION-r$REV" >/dev/null
	rm -f "$work/stage.tar"
	docker run -d --name "$name" --privileged -v "$work/containerd:/var/lib/containerd" -v "$IMAGES:/images:ro" \
		--entrypoint /usr/bin/containerd "meshfed/kind-node-stage:$K8S_VERSION-r$REV" >/dev/null
	local ok=""
	for _ in $(seq 1 50); do
		if docker exec "$name" ctr version >/dev/null 2>&1; then ok=1 && break; fi
		sleep 0.2
	done
	[[ -n $ok ]] || die "containerd in $name did not start: $(docker logs "$name" 2>&1 | tail -5)"
	for f in "$DEST"/images/*.tar; do
		docker exec "$name" ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs "/images/$(basename "$f")" >/dev/null ||
			die "ctr import $f failed"
	done
	docker exec "$name" ctr --namespace=k8s.io images ls -q >"$DEST/preloaded-images.txt"
	docker rm -f "$name" >/dev/null
	docker rmi "meshfed/kind-node-stage:$K8S_VERSION-r$REV" >/dev/null
	rm -rf "$root/var/lib/containerd"
	mv "$work/containerd" "$root/var/lib/containerd"
	tar -C "$root" --numeric-owner --xattrs -cf "$work/node.tar" .
	local flat="meshfed/kind-node-flat:$K8S_VERSION-r$REV"
	docker import "$work/node.tar" "$flat" >/dev/null
	rm -rf "$work"
	# the settings of kind's base image; `docker import --change` takes no
	# STOPSIGNAL in Docker 20.10, so a one-line build on top (no registry:
	# its base is local)
	printf '%s\n' "FROM $flat" 'ENV container=docker' 'STOPSIGNAL SIGRTMIN+3' \
		'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' "LABEL meshfed.kind.key=$KEY-r$REV" |
		DOCKER_BUILDKIT=0 docker build -q -t "$NODE_IMAGE" - >/dev/null
	docker rmi "$flat" >/dev/null
}
if ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
	timed "node image $NODE_IMAGE" node_image
fi
log "node image $NODE_IMAGE ($(docker image inspect -f '{{ .Size }}' "$NODE_IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')); cache $DEST ($(du -sh "$DEST" | cut -f1))"
