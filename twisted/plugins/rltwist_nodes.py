# twistd plugins of rltwist: one ServiceMaker per node kind. No logic lives here.
from twisted.application.service import ServiceMaker

rlMaster = ServiceMaker(
    "rltwist master", "rltwist.nodes.master.tap",
    "rltwist master node: registration, heartbeats, start/stop flow, GM HTTP API", "rl-master")
rlLogiccenter = ServiceMaker(
    "rltwist logiccenter", "rltwist.nodes.logiccenter.tap",
    "rltwist logiccenter node: accounts, global mail, global activities", "rl-logiccenter")
rlMap = ServiceMaker(
    "rltwist map", "rltwist.nodes.map.tap",
    "rltwist map node of one region (--sid N): world, aoi, battle", "rl-map")
rlGuild = ServiceMaker(
    "rltwist guild", "rltwist.nodes.guild.tap",
    "rltwist guild node of one region (--sid N)", "rl-guild")
rlMail = ServiceMaker(
    "rltwist mail", "rltwist.nodes.mail.tap",
    "rltwist mail node of one region (--sid N)", "rl-mail")
rlRolecity = ServiceMaker(
    "rltwist rolecity", "rltwist.nodes.rolecity.tap",
    "rltwist rolecity node of one region (--sid N): offline-reachable players", "rl-rolecity")
rlRole = ServiceMaker(
    "rltwist role", "rltwist.nodes.role.tap",
    "rltwist role node (--index N): client gateway and online players", "rl-role")
rlLogin = ServiceMaker(
    "rltwist login", "rltwist.nodes.login.tap",
    "rltwist login node (--index N): client login", "rl-login")
