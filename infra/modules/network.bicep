// Private networking (deployed only when main.bicep's privateNetworking is true): a virtual
// network with a subnet the Flex Consumption app integrates with (delegated to
// Microsoft.App/environments, as Flex requires: the subscription needs the Microsoft.App
// resource provider registered) and a subnet of private endpoints that give the relay storage
// account's blob, queue and table services, and the package account's blob service, private
// addresses, resolved through private DNS zones (created here and linked to the network, or
// existing ones passed in privateDnsZoneIds). The storage accounts then turn public network
// access off.
// Outbound traffic (webhook deliveries, telemetry, Entra metadata) leaves through a NAT gateway
// with one static public IP when natGateway is true (receivers can allow-list it), otherwise
// through default outbound access, set explicitly because newer network API versions turn it
// off by default and the deliveries would then have no way out.
// Child resources are declared at top level with `parent:` (never nested).

@description('Name of the virtual network.')
param name string

@description('Azure region of the network and the private endpoints.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Address space of the virtual network.')
param addressPrefix string

@description('Subnet the function app integrates with (at least /28; /24 leaves room to scale out).')
param appSubnetPrefix string

@description('Subnet that holds the storage private endpoints.')
param privateEndpointSubnetPrefix string

@description('Name of the relay storage account (blob, queue and table endpoints).')
param storageAccountName string

@description('Name of the package storage account (a blob endpoint).')
param packageStorageAccountName string

@description('true: outbound through a NAT gateway with a static public IP; false: default outbound access.')
param natGateway bool = false

@description('Existing private DNS zone resource ids by service ("blob", "queue", "table"); a service not named gets a zone created here.')
param privateDnsZoneIds object = {}

// One private endpoint per (account, service): the relay's account's blob, queue and table (no
// file share on Flex Consumption), the package account's blob.
var endpoints = [
  {
    account: storageAccountName
    service: 'blob'
  }
  {
    account: storageAccountName
    service: 'queue'
  }
  {
    account: storageAccountName
    service: 'table'
  }
  {
    account: packageStorageAccountName
    service: 'blob'
  }
]

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
  }
}

resource natPublicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = if (natGateway) {
  name: 'pip-nat-${name}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

resource nat 'Microsoft.Network/natGateways@2024-05-01' = if (natGateway) {
  name: 'nat-${name}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: natPublicIp.id
      }
    ]
  }
}

resource appSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' = {
  parent: vnet
  name: 'app'
  properties: {
    addressPrefix: appSubnetPrefix
    // Explicit either way: with a NAT gateway nothing leaves any other way; without one the
    // deliveries need default outbound access.
    defaultOutboundAccess: !natGateway
    natGateway: natGateway ? {
      id: nat.id
    } : null
    delegations: [
      {
        name: 'flex-consumption'
        properties: {
          serviceName: 'Microsoft.App/environments'
        }
      }
    ]
  }
}

resource privateEndpointSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' = {
  parent: vnet
  name: 'private-endpoints'
  properties: {
    addressPrefix: privateEndpointSubnetPrefix
    privateEndpointNetworkPolicies: 'Disabled'
    // Private endpoints only receive: nothing here needs a way out.
    defaultOutboundAccess: false
  }
  // Two subnets of one network cannot be written at the same time.
  dependsOn: [
    appSubnet
  ]
}

// A zone per service, created here unless privateDnsZoneIds names an existing one (a hub's).
var zoneNames = {
  blob: 'privatelink.blob.${environment().suffixes.storage}'
  queue: 'privatelink.queue.${environment().suffixes.storage}'
  table: 'privatelink.table.${environment().suffixes.storage}'
}

module blobZone 'dnszone.bicep' = if (!contains(privateDnsZoneIds, 'blob')) {
  name: 'dns-blob'
  params: {
    zoneName: zoneNames.blob
    vnetId: vnet.id
    linkName: '${name}-link'
    tags: tags
  }
}

module queueZone 'dnszone.bicep' = if (!contains(privateDnsZoneIds, 'queue')) {
  name: 'dns-queue'
  params: {
    zoneName: zoneNames.queue
    vnetId: vnet.id
    linkName: '${name}-link'
    tags: tags
  }
}

module tableZone 'dnszone.bicep' = if (!contains(privateDnsZoneIds, 'table')) {
  name: 'dns-table'
  params: {
    zoneName: zoneNames.table
    vnetId: vnet.id
    linkName: '${name}-link'
    tags: tags
  }
}

// The zone each service's endpoints register in: the given one, else the one created above.
var zoneIds = {
  blob: contains(privateDnsZoneIds, 'blob') ? privateDnsZoneIds.blob : blobZone.outputs.id
  queue: contains(privateDnsZoneIds, 'queue') ? privateDnsZoneIds.queue : queueZone.outputs.id
  table: contains(privateDnsZoneIds, 'table') ? privateDnsZoneIds.table : tableZone.outputs.id
}

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in endpoints: {
  name: 'pe-${endpoint.account}-${endpoint.service}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnet.id
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.service
        properties: {
          privateLinkServiceId: resourceId('Microsoft.Storage/storageAccounts', endpoint.account)
          groupIds: [
            endpoint.service
          ]
        }
      }
    ]
  }
}]

resource dnsZoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.service
        properties: {
          privateDnsZoneId: zoneIds[endpoint.service]
        }
      }
    ]
  }
}]

@description('Resource id of the subnet the function app integrates with.')
output appSubnetId string = appSubnet.id

@description('Name of the virtual network.')
output name string = vnet.name

@description('The static public IP outbound traffic leaves from (natGateway); empty otherwise.')
output natPublicIp string = natGateway ? natPublicIp.properties.ipAddress : ''
