/*
 * A real Hadoop YARN for the tests: one ResourceManager and one NodeManager (Hadoop's MiniYARNCluster) in this JVM,
 * every address on 127.0.0.1, local files instead of HDFS (fs.defaultFS=file:///: one machine, so the NodeManager
 * localizes from the local disk).
 *
 * Usage: java -cp <conf dir>:<hadoop jars>:<this class> MiniYarn <conf dir> <work dir>
 * Settings (system properties): gp.yarn.amExpiryMs (AM liveness expiry, default 20000), gp.yarn.nmMemoryMb (8192).
 *
 * Once the RM and NM run, it writes yarn-site.xml and core-site.xml for clients into <conf dir> and then the file
 * <conf dir>/ready (the RM's web address); it runs until SIGTERM, when a shutdown hook stops the cluster (and with it
 * the NodeManager's containers).
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
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

public final class MiniYarn {
    private static final String HOST = "127.0.0.1";

    /** A free port on loopback (the cluster's ports are fixed, so that nothing binds the machine's other addresses). */
    private static String freeAddress() throws IOException {
        try (ServerSocket socket = new ServerSocket()) {
            socket.bind(new InetSocketAddress(HOST, 0));
            return HOST + ":" + socket.getLocalPort();
        }
    }

    public static void main(String[] args) throws Exception {
        Path confDir = Paths.get(args[0]).toAbsolutePath();
        Files.createDirectories(confDir);
        Files.deleteIfExists(confDir.resolve("ready"));

        YarnConfiguration conf = new YarnConfiguration();
        conf.set("fs.defaultFS", "file:///");
        // Fixed ports, all on loopback (MiniYARNCluster's ephemeral mode binds the machine's host name instead).
        conf.setBoolean(YarnConfiguration.YARN_MINICLUSTER_FIXED_PORTS, true);
        conf.set(YarnConfiguration.RM_HOSTNAME, HOST);
        conf.set(YarnConfiguration.RM_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_SCHEDULER_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_ADMIN_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.RM_WEBAPP_ADDRESS, freeAddress());
        conf.set("yarn.nodemanager.hostname", HOST);
        conf.set(YarnConfiguration.NM_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.NM_LOCALIZER_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.NM_WEBAPP_ADDRESS, freeAddress());
        conf.set(YarnConfiguration.NM_COLLECTOR_SERVICE_ADDRESS, freeAddress());
        conf.set("yarn.nodemanager.amrmproxy.address", freeAddress());
        conf.set("yarn.timeline-service.address", freeAddress());
        conf.set("yarn.timeline-service.webapp.address", freeAddress());

        // A short AM expiry, so that a test can wait out three of them: an AM that does not heartbeat dies.
        conf.setLong(YarnConfiguration.RM_AM_EXPIRY_INTERVAL_MS, Long.getLong("gp.yarn.amExpiryMs", 20000L));
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

        // Capacity scheduler: 'default' for the kernels, and 'tiny', too small for any AM (a full queue on demand).
        conf.set(YarnConfiguration.RM_SCHEDULER,
                "org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler");
        conf.set("yarn.scheduler.capacity.root.queues", "default,tiny");
        conf.set("yarn.scheduler.capacity.root.default.capacity", "99");
        conf.set("yarn.scheduler.capacity.root.default.maximum-capacity", "100");
        conf.set("yarn.scheduler.capacity.root.default.user-limit-factor", "100");
        conf.set("yarn.scheduler.capacity.root.tiny.capacity", "1");
        conf.set("yarn.scheduler.capacity.root.tiny.maximum-capacity", "1");
        conf.set("yarn.scheduler.capacity.maximum-am-resource-percent", "1.0");
        conf.set("yarn.scheduler.capacity.node-locality-delay", "-1");

        MiniYARNCluster cluster = new MiniYARNCluster("gp-yarn", 1, 1, 1, 1);
        cluster.init(conf);
        cluster.start();
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::stop, "stop-mini-yarn"));
        if (!cluster.waitForNodeManagersToConnect(60000)) {
            throw new IllegalStateException("the NodeManager did not register with the ResourceManager in 60 s");
        }

        Configuration live = cluster.getConfig();
        writeXml(live, confDir.resolve("yarn-site.xml"));
        Configuration core = new Configuration(false);
        core.set("fs.defaultFS", "file:///");
        writeXml(core, confDir.resolve("core-site.xml"));
        String web = "http://" + live.get(YarnConfiguration.RM_WEBAPP_ADDRESS);
        Path ready = confDir.resolve("ready.tmp");
        Files.write(ready, (web + "\n").getBytes(StandardCharsets.UTF_8));
        Files.move(ready, confDir.resolve("ready"), StandardCopyOption.ATOMIC_MOVE);
        System.out.println("MiniYarn ready: ResourceManager " + web);
        Thread.currentThread().join();  // until SIGTERM
    }

    private static void writeXml(Configuration conf, Path path) throws IOException {
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
        try (OutputStream out = Files.newOutputStream(tmp)) {
            conf.writeXml(out);
        }
        Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
