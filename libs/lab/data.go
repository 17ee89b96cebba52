package lab

// Static tables the plan draws from. Versions and output formats are copied
// from real systems of the named releases so that parsers written against the
// lab also work against the real thing.

// pkg is one installed package as the package manager reports it.
type pkg struct{ name, version string }

// kernel is one kernel build of a distribution.
type kernel struct{ release, version string }

// distro is a Linux distribution the linux_server profile can run.
type distro struct {
	id        string // stable key, e.g. "debian12"
	name      string // os-release NAME
	versionID string // os-release VERSION_ID
	family    string // "deb" or "rpm"
	osRelease string // /etc/os-release
	// unameExtra is what uname -a prints between the machine and the OS:
	// Debian's coreutils omits the unknown processor/platform fields.
	unameExtra string
	kernels    []kernel
	sshVersion string // SSH server identification string
	rootDev    string // device of / in df
	rootFS     string
	base       []pkg
	// applications available on this release
	nginx, apache, postgres, mysql appVariant
}

// appVariant is how one application is packaged on one distribution.
type appVariant struct {
	name     string // manifest name: nginx, apache, postgresql, mysql, mariadb
	class    string // web_server or database
	version  string // upstream version reported in the manifest
	process  string // comm of the listening process
	args     string // command line of the main process
	server   string // HTTP Server header (web servers)
	banner   string // server version in the protocol greeting (databases)
	user     string // process owner
	pkgs     []pkg
	worker   string // comm of worker processes, if any
	workArgs string
}

var distros = []*distro{
	{
		id: "debian12", name: "Debian GNU/Linux", versionID: "12", family: "deb",
		osRelease: `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
`,
		unameExtra: "x86_64",
		kernels: []kernel{
			{"6.1.0-18-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"},
			{"6.1.0-21-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.90-1 (2024-05-03)"},
			{"6.1.0-25-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.106-3 (2024-08-26)"},
		},
		sshVersion: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
		rootDev:    "/dev/sda1", rootFS: "ext4",
		base: []pkg{
			{"adduser", "3.134"}, {"apt", "2.6.1"}, {"base-files", "12.4+deb12u6"}, {"bash", "5.2.15-2+b7"},
			{"ca-certificates", "20230311"}, {"coreutils", "9.1-1"}, {"cron", "3.0pl1-162"}, {"curl", "7.88.1-10+deb12u6"},
			{"dbus", "1.14.10-1~deb12u1"}, {"dpkg", "1.21.22"}, {"e2fsprogs", "1.47.0-2"}, {"gnupg", "2.2.40-1.1"},
			{"iproute2", "6.1.0-3"}, {"less", "590-2.1~deb12u2"}, {"libc6", "2.36-9+deb12u7"}, {"libssl3", "3.0.13-1~deb12u1"},
			{"logrotate", "3.21.0-1"}, {"lsb-release", "12.0-1"}, {"openssh-client", "1:9.2p1-2+deb12u3"},
			{"openssh-server", "1:9.2p1-2+deb12u3"}, {"openssl", "3.0.13-1~deb12u1"}, {"procps", "2:4.0.2-3"},
			{"python3", "3.11.2-1+b1"}, {"rsync", "3.2.7-1"}, {"rsyslog", "8.2302.0-1"}, {"sudo", "1.9.13p3-1+deb12u1"},
			{"systemd", "252.26-1~deb12u2"}, {"systemd-timesyncd", "252.26-1~deb12u2"}, {"tar", "1.34+dfsg-1.2+deb12u1"},
			{"tzdata", "2024a-0+deb12u1"}, {"vim-tiny", "2:9.0.1378-2"}, {"wget", "1.21.3-1+b2"}, {"zlib1g", "1:1.2.13.dfsg-1"},
		},
		nginx: appVariant{name: "nginx", class: "web_server", version: "1.22.1", process: "nginx",
			args: "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;", server: "nginx/1.22.1", user: "root",
			pkgs:   []pkg{{"nginx", "1.22.1-9"}, {"nginx-common", "1.22.1-9"}},
			worker: "nginx", workArgs: "nginx: worker process"},
		apache: appVariant{name: "apache", class: "web_server", version: "2.4.62", process: "apache2",
			args: "/usr/sbin/apache2 -k start", server: "Apache/2.4.62 (Debian)", user: "root",
			pkgs:   []pkg{{"apache2", "2.4.62-1~deb12u1"}, {"apache2-bin", "2.4.62-1~deb12u1"}, {"apache2-data", "2.4.62-1~deb12u1"}},
			worker: "apache2", workArgs: "/usr/sbin/apache2 -k start"},
		postgres: appVariant{name: "postgresql", class: "database", version: "15.8", process: "postgres",
			args: "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf",
			user: "postgres", pkgs: []pkg{{"postgresql-15", "15.8-0+deb12u1"}, {"postgresql-client-15", "15.8-0+deb12u1"}, {"postgresql-common", "248"}}},
		mysql: appVariant{name: "mariadb", class: "database", version: "10.11.6", process: "mariadbd",
			args: "/usr/sbin/mariadbd", banner: "10.11.6-MariaDB-0+deb12u1", user: "mysql",
			pkgs: []pkg{{"mariadb-server", "1:10.11.6-0+deb12u1"}, {"mariadb-client", "1:10.11.6-0+deb12u1"}}},
	},
	{
		id: "ubuntu2204", name: "Ubuntu", versionID: "22.04", family: "deb",
		osRelease: `PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
`,
		unameExtra: "x86_64 x86_64 x86_64",
		kernels: []kernel{
			{"5.15.0-105-generic", "#115-Ubuntu SMP Mon Apr 15 09:52:04 UTC 2024"},
			{"5.15.0-119-generic", "#129-Ubuntu SMP Fri Aug 2 19:25:20 UTC 2024"},
			{"5.15.0-91-generic", "#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023"},
		},
		sshVersion: "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10",
		rootDev:    "/dev/mapper/ubuntu--vg-ubuntu--lv", rootFS: "ext4",
		base: []pkg{
			{"adduser", "3.118ubuntu5"}, {"apt", "2.4.12"}, {"base-files", "12ubuntu4.6"}, {"bash", "5.1-6ubuntu1.1"},
			{"ca-certificates", "20230311ubuntu0.22.04.1"}, {"cloud-init", "24.1.3-0ubuntu1~22.04.5"}, {"coreutils", "8.32-4.1ubuntu1.2"},
			{"cron", "3.0pl1-137ubuntu3"}, {"curl", "7.81.0-1ubuntu1.16"}, {"dpkg", "1.21.1ubuntu2.3"}, {"gnupg", "2.2.27-3ubuntu2.1"},
			{"iproute2", "5.15.0-1ubuntu2"}, {"less", "590-1ubuntu0.22.04.3"}, {"libc6", "2.35-0ubuntu3.8"}, {"libssl3", "3.0.2-0ubuntu1.16"},
			{"lsb-release", "11.1.0ubuntu4"}, {"netplan.io", "0.106.1-7ubuntu0.22.04.4"}, {"openssh-client", "1:8.9p1-3ubuntu0.10"},
			{"openssh-server", "1:8.9p1-3ubuntu0.10"}, {"openssl", "3.0.2-0ubuntu1.16"}, {"procps", "2:3.3.17-6ubuntu2.1"},
			{"python3", "3.10.6-1~22.04.1"}, {"rsync", "3.2.7-0ubuntu0.22.04.2"}, {"rsyslog", "8.2112.0-2ubuntu2.2"},
			{"snapd", "2.63+22.04ubuntu0.1"}, {"sudo", "1.9.9-1ubuntu2.4"}, {"systemd", "249.11-0ubuntu3.12"},
			{"tar", "1.34+dfsg-1ubuntu0.1.22.04.2"}, {"tzdata", "2024a-0ubuntu0.22.04.1"}, {"ubuntu-minimal", "1.481.1"},
			{"vim", "2:8.2.3995-1ubuntu2.17"}, {"wget", "1.21.2-2ubuntu1.1"}, {"zlib1g", "1:1.2.11.dfsg-2ubuntu9.2"},
		},
		nginx: appVariant{name: "nginx", class: "web_server", version: "1.18.0", process: "nginx",
			args: "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;", server: "nginx/1.18.0 (Ubuntu)", user: "root",
			pkgs:   []pkg{{"nginx", "1.18.0-6ubuntu14.4"}, {"nginx-common", "1.18.0-6ubuntu14.4"}, {"nginx-core", "1.18.0-6ubuntu14.4"}},
			worker: "nginx", workArgs: "nginx: worker process"},
		apache: appVariant{name: "apache", class: "web_server", version: "2.4.52", process: "apache2",
			args: "/usr/sbin/apache2 -k start", server: "Apache/2.4.52 (Ubuntu)", user: "root",
			pkgs:   []pkg{{"apache2", "2.4.52-1ubuntu4.10"}, {"apache2-bin", "2.4.52-1ubuntu4.10"}, {"apache2-data", "2.4.52-1ubuntu4.10"}},
			worker: "apache2", workArgs: "/usr/sbin/apache2 -k start"},
		postgres: appVariant{name: "postgresql", class: "database", version: "14.13", process: "postgres",
			args: "/usr/lib/postgresql/14/bin/postgres -D /var/lib/postgresql/14/main -c config_file=/etc/postgresql/14/main/postgresql.conf",
			user: "postgres", pkgs: []pkg{{"postgresql-14", "14.13-0ubuntu0.22.04.1"}, {"postgresql-client-14", "14.13-0ubuntu0.22.04.1"}, {"postgresql-common", "238"}}},
		mysql: appVariant{name: "mysql", class: "database", version: "8.0.39", process: "mysqld",
			args: "/usr/sbin/mysqld", banner: "8.0.39-0ubuntu0.22.04.1", user: "mysql",
			pkgs: []pkg{{"mysql-server-8.0", "8.0.39-0ubuntu0.22.04.1"}, {"mysql-client-8.0", "8.0.39-0ubuntu0.22.04.1"}, {"mysql-common", "5.8+1.0.8"}}},
	},
	{
		id: "ubuntu2404", name: "Ubuntu", versionID: "24.04", family: "deb",
		osRelease: `PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
`,
		unameExtra: "x86_64 x86_64 x86_64",
		kernels: []kernel{
			{"6.8.0-31-generic", "#31-Ubuntu SMP PREEMPT_DYNAMIC Sat Apr 20 00:40:06 UTC 2024"},
			{"6.8.0-45-generic", "#45-Ubuntu SMP PREEMPT_DYNAMIC Fri Aug 30 12:02:04 UTC 2024"},
		},
		sshVersion: "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5",
		rootDev:    "/dev/mapper/ubuntu--vg-ubuntu--lv", rootFS: "ext4",
		base: []pkg{
			{"adduser", "3.137ubuntu1"}, {"apt", "2.7.14build2"}, {"base-files", "13ubuntu10.1"}, {"bash", "5.2.21-2ubuntu4"},
			{"ca-certificates", "20240203"}, {"cloud-init", "24.2-0ubuntu1~24.04.2"}, {"coreutils", "9.4-3ubuntu6"},
			{"cron", "3.0pl1-184ubuntu2"}, {"curl", "8.5.0-2ubuntu10.4"}, {"dpkg", "1.22.6ubuntu6.1"}, {"gnupg", "2.4.4-2ubuntu17"},
			{"iproute2", "6.1.0-1ubuntu6"}, {"less", "590-2ubuntu2.1"}, {"libc6", "2.39-0ubuntu8.3"}, {"libssl3t64", "3.0.13-0ubuntu3.4"},
			{"lsb-release", "12.0-2"}, {"netplan.io", "1.0.1-1ubuntu2~24.04.1"}, {"openssh-client", "1:9.6p1-3ubuntu13.5"},
			{"openssh-server", "1:9.6p1-3ubuntu13.5"}, {"openssl", "3.0.13-0ubuntu3.4"}, {"procps", "2:4.0.4-4ubuntu3.2"},
			{"python3", "3.12.3-0ubuntu2"}, {"rsync", "3.2.7-1ubuntu1"}, {"rsyslog", "8.2312.0-3ubuntu9"},
			{"snapd", "2.63.1+24.04"}, {"sudo", "1.9.15p5-3ubuntu5"}, {"systemd", "255.4-1ubuntu8.4"},
			{"tar", "1.35+dfsg-3build1"}, {"tzdata", "2024a-3ubuntu1.1"}, {"ubuntu-minimal", "1.539.1"},
			{"vim", "2:9.1.0016-1ubuntu7.3"}, {"wget", "1.21.4-1ubuntu4.1"}, {"zlib1g", "1:1.3.dfsg-3.1ubuntu2.1"},
		},
		nginx: appVariant{name: "nginx", class: "web_server", version: "1.24.0", process: "nginx",
			args: "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;", server: "nginx/1.24.0 (Ubuntu)", user: "root",
			pkgs:   []pkg{{"nginx", "1.24.0-2ubuntu7.1"}, {"nginx-common", "1.24.0-2ubuntu7.1"}},
			worker: "nginx", workArgs: "nginx: worker process"},
		apache: appVariant{name: "apache", class: "web_server", version: "2.4.58", process: "apache2",
			args: "/usr/sbin/apache2 -k start", server: "Apache/2.4.58 (Ubuntu)", user: "root",
			pkgs:   []pkg{{"apache2", "2.4.58-1ubuntu8.4"}, {"apache2-bin", "2.4.58-1ubuntu8.4"}, {"apache2-data", "2.4.58-1ubuntu8.4"}},
			worker: "apache2", workArgs: "/usr/sbin/apache2 -k start"},
		postgres: appVariant{name: "postgresql", class: "database", version: "16.4", process: "postgres",
			args: "/usr/lib/postgresql/16/bin/postgres -D /var/lib/postgresql/16/main -c config_file=/etc/postgresql/16/main/postgresql.conf",
			user: "postgres", pkgs: []pkg{{"postgresql-16", "16.4-0ubuntu0.24.04.2"}, {"postgresql-client-16", "16.4-0ubuntu0.24.04.2"}, {"postgresql-common", "257build1.1"}}},
		mysql: appVariant{name: "mysql", class: "database", version: "8.0.39", process: "mysqld",
			args: "/usr/sbin/mysqld", banner: "8.0.39-0ubuntu0.24.04.2", user: "mysql",
			pkgs: []pkg{{"mysql-server-8.0", "8.0.39-0ubuntu0.24.04.2"}, {"mysql-client-8.0", "8.0.39-0ubuntu0.24.04.2"}, {"mysql-common", "5.8+1.1.0build1"}}},
	},
	{
		id: "rocky9", name: "Rocky Linux", versionID: "9.4", family: "rpm",
		osRelease: `NAME="Rocky Linux"
VERSION="9.4 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2032-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.4"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.4"
`,
		unameExtra: "x86_64 x86_64 x86_64",
		kernels: []kernel{
			{"5.14.0-427.13.1.el9_4.x86_64", "#1 SMP PREEMPT_DYNAMIC Wed May 1 19:11:28 UTC 2024"},
			{"5.14.0-427.33.1.el9_4.x86_64", "#1 SMP PREEMPT_DYNAMIC Fri Aug 30 09:45:56 UTC 2024"},
		},
		sshVersion: "SSH-2.0-OpenSSH_8.7",
		rootDev:    "/dev/mapper/rl-root", rootFS: "xfs",
		base: []pkg{
			{"basesystem", "11-13.el9"}, {"bash", "5.1.8-9.el9"}, {"ca-certificates", "2024.2.69_v8.0.303-91.4.el9_4"},
			{"chrony", "4.5-1.el9"}, {"coreutils", "8.32-35.el9"}, {"cronie", "1.5.7-11.el9"}, {"curl", "7.76.1-29.el9_4.1"},
			{"dnf", "4.14.0-9.el9"}, {"firewalld", "1.3.4-1.el9"}, {"glibc", "2.34-100.el9_4.3"}, {"iproute", "6.2.0-6.el9_4"},
			{"kernel", "5.14.0-427.13.1.el9_4"}, {"less", "590-4.el9_4"}, {"openssh", "8.7p1-38.el9_4.4"},
			{"openssh-clients", "8.7p1-38.el9_4.4"}, {"openssh-server", "8.7p1-38.el9_4.4"}, {"openssl", "3.0.7-27.el9"},
			{"procps-ng", "3.3.17-14.el9"}, {"python3", "3.9.18-3.el9_4.5"}, {"rocky-release", "9.4-1.7.el9"},
			{"rpm", "4.16.1.3-29.el9"}, {"rsync", "3.2.3-19.el9"}, {"rsyslog", "8.2310.0-4.el9"}, {"selinux-policy", "38.1.35-2.el9_4.2"},
			{"sudo", "1.9.5p2-10.el9_3"}, {"systemd", "252-32.el9_4.7"}, {"tar", "1.34-6.el9_4.1"}, {"tzdata", "2024a-1.el9"},
			{"vim-minimal", "8.2.2637-20.el9_1"}, {"wget", "1.21.1-7.el9"}, {"zlib", "1.2.11-40.el9"},
		},
		nginx: appVariant{name: "nginx", class: "web_server", version: "1.20.1", process: "nginx",
			args: "nginx: master process /usr/sbin/nginx", server: "nginx/1.20.1", user: "root",
			pkgs:   []pkg{{"nginx", "1.20.1-14.el9_2.1"}, {"nginx-core", "1.20.1-14.el9_2.1"}, {"nginx-filesystem", "1.20.1-14.el9_2.1"}},
			worker: "nginx", workArgs: "nginx: worker process"},
		apache: appVariant{name: "apache", class: "web_server", version: "2.4.57", process: "httpd",
			args: "/usr/sbin/httpd -DFOREGROUND", server: "Apache/2.4.57 (Rocky Linux)", user: "root",
			pkgs:   []pkg{{"httpd", "2.4.57-11.el9_4.1"}, {"httpd-core", "2.4.57-11.el9_4.1"}, {"httpd-tools", "2.4.57-11.el9_4.1"}, {"mod_ssl", "2.4.57-11.el9_4.1"}},
			worker: "httpd", workArgs: "/usr/sbin/httpd -DFOREGROUND"},
		postgres: appVariant{name: "postgresql", class: "database", version: "13.14", process: "postmaster",
			args: "/usr/bin/postmaster -D /var/lib/pgsql/data", user: "postgres",
			pkgs: []pkg{{"postgresql", "13.14-1.el9_3"}, {"postgresql-server", "13.14-1.el9_3"}, {"postgresql-private-libs", "13.14-1.el9_3"}}},
		mysql: appVariant{name: "mysql", class: "database", version: "8.0.36", process: "mysqld",
			args: "/usr/libexec/mysqld --basedir=/usr", banner: "8.0.36", user: "mysql",
			pkgs: []pkg{{"mysql-server", "8.0.36-1.el9_3"}, {"mysql", "8.0.36-1.el9_3"}, {"mysql-common", "8.0.36-1.el9_3"}}},
	},
	{
		id: "rhel9", name: "Red Hat Enterprise Linux", versionID: "9.4", family: "rpm",
		osRelease: `NAME="Red Hat Enterprise Linux"
VERSION="9.4 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/9"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 9"
REDHAT_BUGZILLA_PRODUCT_VERSION=9.4
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.4"
`,
		unameExtra: "x86_64 x86_64 x86_64",
		kernels: []kernel{
			{"5.14.0-427.13.1.el9_4.x86_64", "#1 SMP PREEMPT_DYNAMIC Wed Apr 10 10:29:16 EDT 2024"},
			{"5.14.0-427.37.1.el9_4.x86_64", "#1 SMP PREEMPT_DYNAMIC Fri Sep 13 12:41:50 EDT 2024"},
		},
		sshVersion: "SSH-2.0-OpenSSH_8.7",
		rootDev:    "/dev/mapper/rhel-root", rootFS: "xfs",
		base: []pkg{
			{"basesystem", "11-13.el9"}, {"bash", "5.1.8-9.el9"}, {"ca-certificates", "2024.2.69_v8.0.303-91.4.el9_4"},
			{"chrony", "4.5-1.el9"}, {"coreutils", "8.32-35.el9"}, {"cronie", "1.5.7-11.el9"}, {"curl", "7.76.1-29.el9_4.1"},
			{"dnf", "4.14.0-9.el9"}, {"firewalld", "1.3.4-1.el9"}, {"glibc", "2.34-100.el9_4.3"}, {"insights-client", "3.2.8-1.el9"},
			{"iproute", "6.2.0-6.el9_4"}, {"kernel", "5.14.0-427.13.1.el9_4"}, {"less", "590-4.el9_4"}, {"openssh", "8.7p1-38.el9_4.4"},
			{"openssh-clients", "8.7p1-38.el9_4.4"}, {"openssh-server", "8.7p1-38.el9_4.4"}, {"openssl", "3.0.7-27.el9"},
			{"procps-ng", "3.3.17-14.el9"}, {"python3", "3.9.18-3.el9_4.5"}, {"redhat-release", "9.4-0.5.el9"},
			{"rpm", "4.16.1.3-29.el9"}, {"rsync", "3.2.3-19.el9"}, {"rsyslog", "8.2310.0-4.el9"}, {"selinux-policy", "38.1.35-2.el9_4.2"},
			{"subscription-manager", "1.29.40-1.el9"}, {"sudo", "1.9.5p2-10.el9_3"}, {"systemd", "252-32.el9_4.7"},
			{"tar", "1.34-6.el9_4.1"}, {"tzdata", "2024a-1.el9"}, {"vim-minimal", "8.2.2637-20.el9_1"}, {"zlib", "1.2.11-40.el9"},
		},
		nginx: appVariant{name: "nginx", class: "web_server", version: "1.20.1", process: "nginx",
			args: "nginx: master process /usr/sbin/nginx", server: "nginx/1.20.1", user: "root",
			pkgs:   []pkg{{"nginx", "1.20.1-14.el9_2.1"}, {"nginx-core", "1.20.1-14.el9_2.1"}, {"nginx-filesystem", "1.20.1-14.el9_2.1"}},
			worker: "nginx", workArgs: "nginx: worker process"},
		apache: appVariant{name: "apache", class: "web_server", version: "2.4.57", process: "httpd",
			args: "/usr/sbin/httpd -DFOREGROUND", server: "Apache/2.4.57 (Red Hat Enterprise Linux)", user: "root",
			pkgs:   []pkg{{"httpd", "2.4.57-11.el9_4.1"}, {"httpd-core", "2.4.57-11.el9_4.1"}, {"httpd-tools", "2.4.57-11.el9_4.1"}, {"mod_ssl", "2.4.57-11.el9_4.1"}},
			worker: "httpd", workArgs: "/usr/sbin/httpd -DFOREGROUND"},
		postgres: appVariant{name: "postgresql", class: "database", version: "13.14", process: "postmaster",
			args: "/usr/bin/postmaster -D /var/lib/pgsql/data", user: "postgres",
			pkgs: []pkg{{"postgresql", "13.14-1.el9_3"}, {"postgresql-server", "13.14-1.el9_3"}, {"postgresql-private-libs", "13.14-1.el9_3"}}},
		mysql: appVariant{name: "mysql", class: "database", version: "8.0.36", process: "mysqld",
			args: "/usr/libexec/mysqld --basedir=/usr", banner: "8.0.36", user: "mysql",
			pkgs: []pkg{{"mysql-server", "8.0.36-1.el9_3"}, {"mysql", "8.0.36-1.el9_3"}, {"mysql-common", "8.0.36-1.el9_3"}}},
	},
}

// distroWeights pairs with distros: Debian and Ubuntu dominate, RHEL-likes are common.
var distroWeights = []int{30, 25, 20, 15, 10}

// extraPkgs are optional tools some hosts have installed (name, deb version, rpm version).
var extraPkgs = []struct{ name, deb, rpm string }{
	{"htop", "3.2.2-2", "3.3.0-1.el9"},
	{"git", "1:2.39.5-0+deb12u1", "2.43.5-1.el9_4"},
	{"jq", "1.6-2.1", "1.6-16.el9"},
	{"tmux", "3.3a-3", "3.2a-5.el9"},
	{"nfs-common", "1:2.6.2-4", ""},
	{"nfs-utils", "", "2.5.4-25.el9"},
	{"zabbix-agent", "1:6.0.14+dfsg-1+b1", "6.0.32-release1.el9"},
	{"node-exporter", "1.5.0-1+b6", "1.7.0-1.el9"},
	{"docker-ce", "5:27.2.1-1~debian.12~bookworm", "3:27.2.1-1.el9"},
	{"auditd", "1:3.0.9-1", ""},
	{"audit", "", "3.1.2-2.el9"},
	{"unattended-upgrades", "2.9.1+nmu3", ""},
	{"open-vm-tools", "2:12.2.0-1+deb12u2", "12.3.5-1.el9"},
}

// hardware is a server platform as DMI and the NIC names show it.
type hardware struct {
	vendor, product string
	virtual         bool
	nicNames        []string // kernel names of the first NICs
	oui             string
	serialKind      string // dell, hpe, lenovo, vmware, qemu, junk
	cpus            []string
	cores           []int // vCPUs / logical CPUs choices
	memGiB          []int
	hypervisor      string
}

var hardwares = []*hardware{
	{vendor: "VMware, Inc.", product: "VMware Virtual Platform", virtual: true, nicNames: []string{"ens192", "ens224"}, oui: "00:50:56",
		serialKind: "vmware", cpus: []string{"Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "Intel(R) Xeon(R) Gold 5318Y CPU @ 2.10GHz"},
		cores: []int{2, 4, 4, 8}, memGiB: []int{4, 8, 8, 16, 32}, hypervisor: "VMware"},
	{vendor: "Dell Inc.", product: "PowerEdge R650", nicNames: []string{"eno12399np0", "eno12409np1"}, oui: "b0:7b:25",
		serialKind: "dell", cpus: []string{"Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"},
		cores: []int{32, 64}, memGiB: []int{128, 256}},
	{vendor: "HPE", product: "ProLiant DL360 Gen10 Plus", nicNames: []string{"eno1", "eno2"}, oui: "94:40:c9",
		serialKind: "hpe", cpus: []string{"Intel(R) Xeon(R) Gold 5315Y CPU @ 3.20GHz", "Intel(R) Xeon(R) Silver 4310 CPU @ 2.10GHz"},
		cores: []int{16, 24, 48}, memGiB: []int{64, 128, 192}},
	{vendor: "Lenovo", product: "ThinkSystem SR650 V2", nicNames: []string{"ens3f0", "ens3f1"}, oui: "08:94:ef",
		serialKind: "lenovo", cpus: []string{"Intel(R) Xeon(R) Gold 5320 CPU @ 2.20GHz"},
		cores: []int{52, 104}, memGiB: []int{256, 512}},
	{vendor: "QEMU", product: "Standard PC (Q35 + ICH9, 2009)", virtual: true, nicNames: []string{"enp1s0", "enp2s0"}, oui: "52:54:00",
		serialKind: "qemu", cpus: []string{"AMD EPYC 7313 16-Core Processor", "Intel Xeon Processor (Icelake)"},
		cores: []int{2, 4, 8}, memGiB: []int{4, 8, 16}, hypervisor: "KVM"},
	{vendor: "To Be Filled By O.E.M.", product: "To Be Filled By O.E.M.", nicNames: []string{"enp3s0", "enp4s0"}, oui: "70:85:c2",
		serialKind: "junk", cpus: []string{"Intel(R) Core(TM) i7-9700 CPU @ 3.00GHz", "AMD Ryzen 7 5700G with Radeon Graphics"},
		cores: []int{8, 16}, memGiB: []int{32, 64}},
}

var hardwareWeights = []int{35, 20, 15, 8, 10, 7}

// junkSerial is what cheap boards leave in DMI; several lab hosts share it.
const junkSerial = "To Be Filled By O.E.M."

// windowsVersions are the Windows Server releases the windows_server profile claims.
var windowsVersions = []struct{ os, version string }{
	{"Microsoft Windows Server 2022 Standard", "10.0.20348"},
	{"Microsoft Windows Server 2022 Datacenter", "10.0.20348"},
	{"Microsoft Windows Server 2019 Standard", "10.0.17763"},
	{"Microsoft Windows Server 2016 Standard", "10.0.14393"},
}

// webAppliances are the stand-alone web servers of the web_server profile.
var webAppliances = []struct {
	name, version, server, os string
}{
	{"nginx", "1.24.0", "nginx/1.24.0", "Linux"},
	{"nginx", "1.26.2", "nginx/1.26.2", "Linux"},
	{"apache", "2.4.57", "Apache/2.4.57", "Linux"},
	{"apache", "2.4.62", "Apache/2.4.62 (Unix)", "Linux"},
	{"iis", "10.0", "Microsoft-IIS/10.0", "Microsoft Windows Server 2019 Datacenter"},
}

// pageTitles are the sites the lab's web servers host.
var pageTitles = []string{
	"Welcome to nginx!", "Apache2 Debian Default Page: It works", "IIS Windows Server",
	"%s Intranet", "Grafana", "Jenkins", "Zabbix", "GitLab", "Confluence", "Nextcloud",
	"%s Employee Portal", "Login - %s Helpdesk", "phpMyAdmin", "Kibana", "SonarQube",
}

// gearModel is a switch, router or printer model as SNMP shows it.
type gearModel struct {
	class       string // ip_switch, ip_router, printer
	vendor      string
	model       string
	os          string
	osVersion   string
	sysDescr    string
	sysObjectID string
	oui         string
	serialKind  string // cisco, aruba, juniper, mikrotik, hp, brother, lexmark
	layout      string // interface layout, see buildInterfaces
	services    int    // sysServices
	ssh         string // SSH identification string if the device runs SSH
	telnet      bool   // offers telnet on 23 (some devices)
}

var switchModels = []*gearModel{
	{class: "ip_switch", vendor: "Cisco", model: "C9300-48P", os: "IOS-XE", osVersion: "17.9.4a",
		sysDescr:    "Cisco IOS Software [Cupertino], Catalyst L3 Switch Software (CAT9K_IOSXE), Version 17.9.4a, RELEASE SOFTWARE (fc3)\r\nTechnical Support: http://www.cisco.com/techsupport\r\nCopyright (c) 1986-2023 by Cisco Systems, Inc.\r\nCompiled Fri 20-Oct-23 10:44 by mcpre",
		sysObjectID: ".1.3.6.1.4.1.9.1.2494", oui: "70:b3:17", serialKind: "cisco", layout: "cat9k", services: 6,
		ssh: "SSH-2.0-Cisco-1.25", telnet: true},
	{class: "ip_switch", vendor: "Cisco", model: "WS-C2960X-24TS-L", os: "IOS", osVersion: "15.2(7)E8",
		sysDescr:    "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E8, RELEASE SOFTWARE (fc1)\r\nTechnical Support: http://www.cisco.com/techsupport\r\nCopyright (c) 1986-2023 by Cisco Systems, Inc.\r\nCompiled Thu 09-Mar-23 11:53 by mcpre",
		sysObjectID: ".1.3.6.1.4.1.9.1.1208", oui: "00:1b:54", serialKind: "cisco", layout: "c2960", services: 2,
		ssh: "SSH-2.0-Cisco-1.25", telnet: true},
	{class: "ip_switch", vendor: "Aruba", model: "JL259A 2930F-24G-4SFP", os: "ArubaOS-Switch", osVersion: "WC.16.11.0012",
		sysDescr:    "Aruba JL259A 2930F-24G-4SFP Switch, revision WC.16.11.0012, ROM WC.17.02.0006 (/ws/swbuildm/rel_ukiah_qaoff/code/build/bom(swbuildm_rel_ukiah_qaoff_rel_ukiah))",
		sysObjectID: ".1.3.6.1.4.1.11.2.3.7.11.181.11", oui: "94:b4:0f", serialKind: "aruba", layout: "aruba", services: 74},
	{class: "ip_switch", vendor: "Juniper Networks", model: "EX2300-24T", os: "JUNOS", osVersion: "21.4R3-S5.4",
		sysDescr:    "Juniper Networks, Inc. ex2300-24t Ethernet Switch, kernel JUNOS 21.4R3-S5.4, Build date: 2023-08-31 00:52:44 UTC Copyright (c) 1996-2023 Juniper Networks, Inc.",
		sysObjectID: ".1.3.6.1.4.1.2636.1.1.1.2.132", oui: "28:8a:1c", serialKind: "juniper", layout: "ex2300", services: 4,
		ssh: "SSH-2.0-OpenSSH_7.5"},
}

var switchWeights = []int{35, 30, 20, 15}

var routerModels = []*gearModel{
	{class: "ip_router", vendor: "Cisco", model: "ISR4331/K9", os: "IOS-XE", osVersion: "17.6.5",
		sysDescr:    "Cisco IOS Software [Bengaluru], ISR Software (X86_64_LINUX_IOSD-UNIVERSALK9-M), Version 17.6.5, RELEASE SOFTWARE (fc2)\r\nTechnical Support: http://www.cisco.com/techsupport\r\nCopyright (c) 1986-2023 by Cisco Systems, Inc.\r\nCompiled Wed 25-Jan-23 16:15 by mcpre",
		sysObjectID: ".1.3.6.1.4.1.9.1.1651", oui: "00:c8:8b", serialKind: "cisco", layout: "isr", services: 78,
		ssh: "SSH-2.0-Cisco-1.25", telnet: true},
	{class: "ip_router", vendor: "Juniper Networks", model: "SRX300", os: "JUNOS", osVersion: "22.4R2.8",
		sysDescr:    "Juniper Networks, Inc. srx300 internet router, kernel JUNOS 22.4R2.8, Build date: 2023-06-20 12:06:34 UTC Copyright (c) 1996-2023 Juniper Networks, Inc.",
		sysObjectID: ".1.3.6.1.4.1.2636.1.1.1.2.133", oui: "f4:b5:2f", serialKind: "juniper", layout: "srx", services: 4,
		ssh: "SSH-2.0-OpenSSH_7.5"},
	{class: "ip_router", vendor: "MikroTik", model: "CCR2004-16G-2S+", os: "RouterOS", osVersion: "7.14.2",
		sysDescr:    "RouterOS CCR2004-16G-2S+",
		sysObjectID: ".1.3.6.1.4.1.14988.1", oui: "48:a9:8a", serialKind: "mikrotik", layout: "ccr", services: 78,
		ssh: "SSH-2.0-ROSSSH"},
}

var routerWeights = []int{50, 30, 20}

var printerModels = []*gearModel{
	{class: "printer", vendor: "HP", model: "HP LaserJet Pro M404dn", os: "HP FutureSmart", osVersion: "002_2310A",
		sysDescr:    "HP ETHERNET MULTI-ENVIRONMENT,ROM none,JETDIRECT,JD153,EEPROM JSI24090012,CIDATE 06/18/2023",
		sysObjectID: ".1.3.6.1.4.1.11.2.3.9.1", oui: "3c:d9:2b", serialKind: "hp", layout: "printer", services: 72},
	{class: "printer", vendor: "HP", model: "HP Color LaserJet MFP M479fdw", os: "HP FutureSmart", osVersion: "002_2249A",
		sysDescr:    "HP ETHERNET MULTI-ENVIRONMENT,ROM none,JETDIRECT,JD153,EEPROM JSI22490028,CIDATE 12/06/2022",
		sysObjectID: ".1.3.6.1.4.1.11.2.3.9.1", oui: "a0:b3:cc", serialKind: "hp", layout: "printer", services: 72},
	{class: "printer", vendor: "Brother", model: "HL-L6400DW", os: "Brother firmware", osVersion: "1.10",
		sysDescr:    "Brother NC-8300h, Firmware Ver.1.10  (20.06.04),MID 8CE-F23,FID 2",
		sysObjectID: ".1.3.6.1.4.1.2435.2.3.9.1", oui: "30:05:5c", serialKind: "brother", layout: "printer", services: 72},
	{class: "printer", vendor: "Lexmark", model: "MS621", os: "Lexmark firmware", osVersion: "MXTGM.081.215",
		sysDescr:    "Lexmark MS621 version MXTGM.081.215 kernel 5.4.94 All-N-1",
		sysObjectID: ".1.3.6.1.4.1.641.2", oui: "00:21:b7", serialKind: "lexmark", layout: "printer", services: 72},
}

var printerWeights = []int{45, 20, 20, 15}

// organisations give each lab its company, domain and site.
var organisations = []struct{ name, domain string }{
	{"Globex", "globex.test"}, {"Initech", "initech.test"}, {"Umbrella", "umbrella.test"},
	{"Acme", "acme.test"}, {"Hooli", "hooli.test"}, {"Stark Industries", "stark.test"},
	{"Wayne Enterprises", "wayne.test"}, {"Cyberdyne", "cyberdyne.test"},
}

var sites = []struct{ code, city, country string }{
	{"dc1", "Frankfurt", "DE"}, {"par", "Paris", "FR"}, {"nyc", "New York", "US"},
	{"lon", "London", "GB"}, {"ams", "Amsterdam", "NL"}, {"sfo", "San Francisco", "US"},
}

var firstNames = []string{
	"Alice", "Bob", "Carla", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas",
	"Kira", "Liam", "Mona", "Nils", "Olga", "Pavel", "Quentin", "Rosa", "Sven", "Tara",
	"Umar", "Vera", "Wen", "Xavier", "Yara", "Zoe", "Anton", "Bianca", "Chen", "Dario",
}

var lastNames = []string{
	"Anders", "Brandt", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ivanova", "Jansen",
	"Keller", "Lopez", "Meyer", "Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka",
	"Ueda", "Vogel", "Weber", "Xu", "Yilmaz", "Zimmer", "Morel", "Lindqvist", "Nakamura", "Silva",
}

var departments = []string{"Engineering", "Operations", "Finance", "Human Resources", "Sales", "Security", "Support"}

var jobTitles = []string{"Engineer", "Senior Engineer", "Analyst", "Manager", "Administrator", "Consultant", "Specialist"}
