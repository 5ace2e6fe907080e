/*
 * A real Hadoop YARN for the tests: Hadoop's own ResourceManager and NodeManager services, each in its own JVM (as
 * in a deployment; in one JVM their web UIs would share Guice's static filter and the RM's /cluster page would be
 * lost), every address on 127.0.0.1, local files instead of HDFS (fs.defaultFS=file:///: one machine, so the
 * NodeManager localizes from the local disk).
 *
 *   java -cp <conf dir>:<hadoop jars>:<this class> MiniYarn conf <conf dir> <work dir>   write the configuration
 *   java ... MiniYarn rm <conf dir> <work dir>                                          run the ResourceManager
 *   java ... MiniYarn nm <conf dir> <work dir>                                          run a NodeManager
 *
 * Settings of the conf step (system properties): gp.yarn.amExpiryMs (AM liveness expiry, default 45000),
 * gp.yarn.nmMemoryMb (8192). The rm and nm steps read yarn-site.xml from <conf dir> (first on their classpath),
 * write <conf dir>/<role>.ready once started, and run until SIGTERM, when a shutdown hook stops the service (the
 * NodeManager stops its containers).
 */

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.service.Service;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.nodemanager.NodeManager;
import org.apache.hadoop.yarn.server.resourcemanager.ResourceManager;

public final class MiniYarn {
    private static final String HOST = "127.0.0.1";

    public static void main(String[] args) {
        try {
            start(args);
        } catch (Throwable e) {  // other threads would keep a half-started service's JVM alive: end it
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void start(String[] args) throws Exception {
        String role = args[0];
        Path confDir = Paths.get(args[1]).toAbsolutePath();
        Path workDir = Paths.get(args[2]).toAbsolutePath();
        switch (role) {
            case "conf":
                writeConf(confDir);
                break;
            case "rm":
                YarnConfiguration rmConf = new YarnConfiguration();
                String id = args.length > 3 ? args[3] : "";
                if (!id.isEmpty()) {
                    rmConf.set(YarnConfiguration.RM_HA_ID, id);  // both RMs are on 127.0.0.1: say which this is
                }
                run(id.isEmpty() ? "rm" : id, new ResourceManager(), rmConf, confDir);
                break;
            case "nm":
                YarnConfiguration conf = new YarnConfiguration();
                conf.set(YarnConfiguration.NM_LOCAL_DIRS, workDir.resolve("nm-local").toString());
                conf.set(YarnConfiguration.NM_LOG_DIRS, workDir.resolve("nm-logs").toString());
                conf.set(YarnConfiguration.NM_REMOTE_APP_LOG_DIR, workDir.resolve("nm-remote-logs").toString());
                run("nm", new NodeManager(), conf, confDir);
                break;
            default:
                throw new IllegalArgumentException("role must be conf, rm or nm, not " + role);
        }
    }

    private static void run(String role, Service service, Configuration conf, Path confDir) throws Exception {
        service.init(conf);
        service.start();
        Runtime.getRuntime().addShutdownHook(new Thread(service::stop, "stop-" + role));
        write(confDir.resolve(role + ".ready"), role + " started\n");
        System.out.println("MiniYarn: " + role + " started");
    }

    /** A free port on loopback (the ports are fixed before start, so that nothing binds another address). */
    private static String freeAddress() throws IOException {
        try (ServerSocket socket = new ServerSocket()) {
            socket.bind(new InetSocketAddress(HOST, 0));
            return HOST + ":" + socket.getLocalPort();
        }
    }

    private static void writeConf(Path confDir) throws IOException {
        Files.createDirectories(confDir);
        Configuration conf = new Configuration(false);
        conf.set(YarnConfiguration.RM_HOSTNAME, HOST);
        conf.set(YarnConfiguration.RM_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_SCHEDULER_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_ADMIN_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_WEBAPP_ADDRESS, freeAddress());
        String endpoints = "http://" + conf.get(YarnConfiguration.RM_WEBAPP_ADDRESS);
        if (Boolean.getBoolean("gp.yarn.ha")) {
            // A pair, rm1 and rm2, failed over by hand (automatic failover needs ZooKeeper), sharing the state store.
            conf.setBoolean(YarnConfiguration.RM_HA_ENABLED, true);
            conf.setBoolean(YarnConfiguration.AUTO_FAILOVER_ENABLED, false);
            conf.set(YarnConfiguration.RM_CLUSTER_ID, "gp-yarn");
            conf.set(YarnConfiguration.RM_HA_IDS, "rm1,rm2");
            StringBuilder web = new StringBuilder();
            for (String id : new String[] {"rm1", "rm2"}) {
                conf.set(YarnConfiguration.RM_HOSTNAME + "." + id, HOST);
                for (String key : new String[] {YarnConfiguration.RM_ADDRESS, YarnConfiguration.RM_SCHEDULER_ADDRESS,
                        YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS, YarnConfiguration.RM_ADMIN_ADDRESS,
                        YarnConfiguration.RM_WEBAPP_ADDRESS}) {
                    conf.set(key + "." + id, freeAddress());
                }
                web.append(web.length() == 0 ? "" : ",").append("http://")
                        .append(conf.get(YarnConfiguration.RM_WEBAPP_ADDRESS + "." + id));
            }
            endpoints = web.toString();
        }
        conf.set("yarn.nodemanager.hostname", HOST);
        conf.set(YarnConfiguration.NM_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.NM_LOCALIZER_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.NM_WEBAPP_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.NM_COLLECTOR_SERVICE_ADDRESS, freeAddress());
        conf.set("yarn.nodemanager.amrmproxy.address", freeAddress());
        conf.set("yarn.timeline-service.address", freeAddress());
        conf.set("yarn.timeline-service.webapp.address", freeAddress());

        // A short AM expiry, so that a test can wait out three of them: an AM that does not heartbeat dies.
        conf.setLong(YarnConfiguration.RM_AM_EXPIRY_INTERVAL_MS, Long.getLong("gp.yarn.amExpiryMs", 45000L));
        // One node with room for a few kernels and executors; memory is not enforced (no cgroups here).
        conf.setInt(YarnConfiguration.NM_PMEM_MB, Integer.getInteger("gp.yarn.nmMemoryMb", 8192));
        conf.setInt(YarnConfiguration.NM_VCORES, 16);
        conf.setBoolean(YarnConfiguration.NM_PMEM_CHECK_ENABLED, false);
        conf.setBoolean(YarnConfiguration.NM_VMEM_CHECK_ENABLED, false);
        conf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 64);
        conf.setInt(YarnConfiguration.RM_SCHEDULER_MAXIMUM_ALLOCATION_MB, 4096);
        conf.setFloat(YarnConfiguration.NM_MAX_PER_DISK_UTILIZATION_PERCENTAGE, 100.0f);  // a busy test disk is fine
        conf.setLong(YarnConfiguration.NM_MIN_PER_DISK_FREE_SPACE_MB, 0);
        // Keep a finished container's logs a while: a failed launch reads their tail.
        conf.setLong(YarnConfiguration.NM_LOG_RETAIN_SECONDS, 3600);
        // Containers are stopped quickly (SIGTERM, then SIGKILL 250 ms later: Hadoop's default).
        conf.setLong(YarnConfiguration.NM_SLEEP_DELAY_BEFORE_SIGKILL_MS, 250);

        // RM restart keeps the applications (state in local files) and the running containers (work-preserving).
        conf.setBoolean(YarnConfiguration.RECOVERY_ENABLED, true);
        conf.set(YarnConfiguration.RM_STORE,
                "org.apache.hadoop.yarn.server.resourcemanager.recovery.FileSystemRMStateStore");
        conf.set(YarnConfiguration.FS_RM_STATE_STORE_URI, confDir.resolveSibling("rm-state").toUri().toString());
        conf.setBoolean(YarnConfiguration.RM_WORK_PRESERVING_RECOVERY_ENABLED, true);
        // The NodeManager and the AMs retry the RM every second while it restarts.
        conf.setLong(YarnConfiguration.RESOURCEMANAGER_CONNECT_RETRY_INTERVAL_MS, 1000);

        // Capacity scheduler: 'default' for the kernels, and 'tiny', too small for any AM (a full queue on demand).
        conf.set(YarnConfiguration.RM_SCHEDULER,
                "org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler");
        Configuration queues = new Configuration(false);
        queues.set("yarn.scheduler.capacity.root.queues", "default,tiny");
        queues.set("yarn.scheduler.capacity.root.default.capacity", "99");
        queues.set("yarn.scheduler.capacity.root.default.maximum-capacity", "100");
        queues.set("yarn.scheduler.capacity.root.default.user-limit-factor", "100");
        queues.set("yarn.scheduler.capacity.root.tiny.capacity", "1");
        queues.set("yarn.scheduler.capacity.root.tiny.maximum-capacity", "1");
        queues.set("yarn.scheduler.capacity.maximum-am-resource-percent", "1.0");
        queues.set("yarn.scheduler.capacity.node-locality-delay", "-1");
        writeXml(queues, confDir.resolve("capacity-scheduler.xml"));

        writeXml(conf, confDir.resolve("yarn-site.xml"));
        Configuration core = new Configuration(false);
        core.set("fs.defaultFS", "file:///");
        writeXml(core, confDir.resolve("core-site.xml"));
        write(confDir.resolve("log4j.properties"),
                "log4j.rootLogger=INFO,console\n"
                + "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
                + "log4j.appender.console.target=System.err\n"
                + "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
                + "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
                // Every HTTP request the RM serves, one line each: the tests count the provisioner's queries there.
                + "log4j.logger.http.requests.resourcemanager=INFO,rmrequests\n"
                + "log4j.additivity.http.requests.resourcemanager=false\n"
                + "log4j.appender.rmrequests=org.apache.log4j.FileAppender\n"
                + "log4j.appender.rmrequests.File=" + confDir.resolveSibling("rm-requests.log") + "\n"
                + "log4j.appender.rmrequests.layout=org.apache.log4j.PatternLayout\n"
                + "log4j.appender.rmrequests.layout.ConversionPattern=%m%n\n");
        write(confDir.resolve("endpoint"), endpoints + "\n");
    }

    private static void writeXml(Configuration conf, Path path) throws IOException {
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
        try (OutputStream out = Files.newOutputStream(tmp)) {
            conf.writeXml(out);
        }
        Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static void write(Path path, String text) throws IOException {
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
        Files.write(tmp, text.getBytes(StandardCharsets.UTF_8));
        Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
